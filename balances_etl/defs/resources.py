"""Resources shared by every domain: NOAH's API and the pipeline's storage.

Each field shows in the Dagster UI; secrets are given as ``dg.EnvVar`` so the UI shows the variable,
never its value. A field left unset falls back to its environment variable and then to the
documented default, read when a run starts (never at import), so tests can override a resource
instead of editing the environment.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from balances_etl.noah import NoahConfig
from balances_etl.noah.config import API_KEY_VARIABLE, BASE_URL_VARIABLE, SIGNING_KEY_PATH_VARIABLE, SIGNING_KEY_VARIABLE
from balances_etl.settings import PipelineSettings


def _environment_with(fields: dict[str, str | None]) -> dict[str, str]:
    """The process environment with the fields that are set laid over it (by variable name)."""
    return {**os.environ, **{variable: value for variable, value in fields.items() if value is not None}}


class NoahApiResource(dg.ConfigurableResource):
    """NOAH's Business API; what is not set here comes from the NOAH_* variables (see the README)."""

    api_key: str = Field(description=f"NOAH API key ({API_KEY_VARIABLE}).")
    base_url: str | None = Field(default=None, description=f"NOAH API base URL ({BASE_URL_VARIABLE}).")
    signing_key_path: str | None = Field(
        default=None, description=f"Path to the request-signing private key PEM ({SIGNING_KEY_PATH_VARIABLE})."
    )
    signing_key: str | None = Field(default=None, description=f"The signing key PEM as text ({SIGNING_KEY_VARIABLE}).")

    def config(self) -> NoahConfig:
        return NoahConfig.from_env(
            _environment_with(
                {
                    API_KEY_VARIABLE: self.api_key,
                    BASE_URL_VARIABLE: self.base_url,
                    SIGNING_KEY_PATH_VARIABLE: self.signing_key_path,
                    SIGNING_KEY_VARIABLE: self.signing_key,
                }
            )
        )


class PipelineStorageResource(dg.ConfigurableResource):
    """Where the pipeline keeps its data; what is not set here comes from the BALANCES_ETL_* variables."""

    data_dir: str | None = Field(default=None, description="Data folder (BALANCES_ETL_DATA_DIR).")

    def settings(self) -> PipelineSettings:
        return PipelineSettings.from_env(_environment_with({"BALANCES_ETL_DATA_DIR": self.data_dir}))


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "noah": NoahApiResource(api_key=dg.EnvVar(API_KEY_VARIABLE)),
            "storage": PipelineStorageResource(),
        }
    )
