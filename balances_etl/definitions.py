"""Entry point for `dagster dev -m balances_etl.definitions` and the CLI: exposes ``defs``."""

from __future__ import annotations

from balances_etl.settings import load_env_file

load_env_file()

import dagster as dg  # noqa: E402  (the .env file must be read before the definitions are built)

from balances_etl.defs.assets import balance_reconciliation, balance_snapshots, snapshot_balances  # noqa: E402
from balances_etl.defs.resources import NoahApiResource, PipelineStorageResource  # noqa: E402
from balances_etl.defs.schedules import daily_balances_job, daily_balances_schedule  # noqa: E402

defs = dg.Definitions(
    assets=[snapshot_balances, balance_snapshots, balance_reconciliation],
    jobs=[daily_balances_job],
    schedules=[daily_balances_schedule],
    resources={"noah": NoahApiResource(), "storage": PipelineStorageResource()},
)
