"""The day's one NOAH op: the balance snapshot, then the transactions sync (``pipeline.observe``),
as the two domains' assets. Wiring only: each domain turns its own result into materializations.

With a domain's raw pages selected its pages are fetched from NOAH; with only its partition
selected the day's raw landing is replayed instead (no NOAH call); a domain with neither selected
is left alone.
"""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from balances_etl.defs.balances.assets import SNAPSHOT_CHECK_SPECS, landing_result, snapshot_specs, snapshot_results
from balances_etl.defs.balances.assets import PARTITION as BALANCES_PARTITION
from balances_etl.defs.balances.assets import RAW_PAGES as BALANCES_RAW_PAGES
from balances_etl.defs.partitions import daily_partitions, partition_date
from balances_etl.defs.resources import NoahApiResource, PipelineStorageResource
from balances_etl.defs.transactions.assets import SYNC_CHECK_SPECS, sync_results, sync_specs
from balances_etl.defs.transactions.assets import PARTITION as TRANSACTIONS_PARTITION
from balances_etl.defs.transactions.assets import RAW_PAGES as TRANSACTIONS_RAW_PAGES
from balances_etl.domain.names import Op
from balances_etl.noah import NoahClient
from balances_etl.pipeline.observe import landed_transactions, noah_transactions, observe_day
from balances_etl.pipeline.snapshot import LandedDaySource, NoahDaySource, SnapshotFailed, snapshot_now


class ObserveDayConfig(dg.Config):
    allow_late: bool = Field(
        default=False,
        description="Record a snapshot for a day that ended longer ago than the lateness allows (rows get is_late=true).",
    )
    simulated_now: str | None = Field(
        default=None,
        description="Emulator only (loopback base URL): the UTC time to treat as now, ISO 8601. The demo uses it.",
    )


@dg.multi_asset(
    name=Op.OBSERVE_NOAH_DAY.value,
    specs=snapshot_specs() + sync_specs(),
    check_specs=SNAPSHOT_CHECK_SPECS + SYNC_CHECK_SPECS,
    partitions_def=daily_partitions,
    can_subset=True,
)
def observe_noah_day(
    context: dg.AssetExecutionContext,
    config: ObserveDayConfig,
    noah: NoahApiResource,
    storage: PipelineStorageResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Take the day's balances, then sync its transactions; a failed sync is reported by the day's last step."""
    settings = storage.settings()
    day = partition_date(context)
    selected = context.selected_asset_keys
    noah_config = noah.config()
    try:
        now = snapshot_now(config.simulated_now, noah_is_loopback=noah_config.is_loopback)
        with NoahClient(noah_config) as client:
            balances = None
            if BALANCES_RAW_PAGES in selected:
                balances = NoahDaySource(client, day, now, lateness=settings.lateness, allow_late=config.allow_late)
            elif BALANCES_PARTITION in selected:
                balances = LandedDaySource(settings.data_dir, day)
            transactions = None
            if TRANSACTIONS_RAW_PAGES in selected:
                transactions = noah_transactions(client, now, settings.transactions_overlap)
            elif TRANSACTIONS_PARTITION in selected:
                transactions = landed_transactions(settings.data_dir, day)
            observed = observe_day(balances, transactions, settings.data_dir, day, run_id=context.run_id,
                                   build_partition=BALANCES_PARTITION in selected)
    except SnapshotFailed as failure:
        if failure.landing is not None:
            yield landing_result(failure.landing)
        raise dg.Failure(description=str(failure)) from None
    if observed.snapshot is not None:
        yield from snapshot_results(observed.snapshot)
    yield from sync_results(observed.sync, observed.sync_failure)
