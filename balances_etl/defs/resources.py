"""Resources: thin handles that read configuration at run time, so secrets never enter Dagster config."""

from __future__ import annotations

import dagster as dg

from balances_etl.noah import NoahClient, NoahConfig
from balances_etl.settings import PipelineSettings


class NoahApiResource(dg.ConfigurableResource):
    """The NOAH balances API, configured by the NOAH_* environment variables."""

    def config(self) -> NoahConfig:
        return NoahConfig.from_env()

    def open_client(self, config: NoahConfig) -> NoahClient:
        return NoahClient(config)


class PipelineStorageResource(dg.ConfigurableResource):
    """Where the pipeline keeps its data, configured by the BALANCES_ETL_* environment variables."""

    def settings(self) -> PipelineSettings:
        return PipelineSettings.from_env()
