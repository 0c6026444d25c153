"""Names shared by the pipeline, the SQL views, the checks and the tests: one place to change them.

Dagster assets are named per domain (``balances/...``) after what they hold; the warehouse's table
and view names are what analysts' queries use, so they never change.
"""

from __future__ import annotations

from enum import StrEnum


class BalancesAsset(StrEnum):
    """The balances domain's Dagster assets, as asset-key paths (``dg.AssetKey.from_user_string``)."""

    RAW_PAGES = "balances/noah_pages"  # every page of GET /v1/balances as received
    PARTITION = "balances/parquet_partition"  # the day's checked Parquet partition: the store of record
    WAREHOUSE = "balances/warehouse_table"  # the day loaded into the DuckDB table balance_snapshots
    RECONCILIATION = "balances/reconciliation"  # the day's reconciliation breaks


class TransactionsAsset(StrEnum):
    """The transactions domain's Dagster assets."""

    RAW_PAGES = "transactions/noah_pages"  # every page of GET /v1/transactions the sync read, as received
    PARTITION = "transactions/parquet_partition"  # the sync's checked Parquet partition: the store of record
    WAREHOUSE = "transactions/warehouse_tables"  # the sync in the DuckDB tables transactions, transaction_status_history


class Op(StrEnum):
    """Dagster ops (a multi-asset's op name is what run config addresses)."""

    OBSERVE_NOAH_DAY = "observe_noah_day"  # the day's balance snapshot, then its transactions sync


class Orchestration(StrEnum):
    DAILY_JOB = "daily_balances_job"
    DAILY_SCHEDULE = "daily_balances_schedule"
    DUCKDB_POOL = "duckdb"  # every DuckDB writer step; one at a time across processes
    CATCHUP_SENSOR = "balances_catchup_sensor"  # relaunches missing days inside their lateness window; alerts
    FRESHNESS_SENSOR = "balances_freshness_sensor"  # evaluates the partition's freshness check


class Table(StrEnum):
    """DuckDB tables of the warehouse."""

    BALANCE_SNAPSHOTS = "balance_snapshots"
    LEDGER = "ledger_expected_balances"
    RECONCILIATION_SETTINGS = "reconciliation_settings"
    TRANSACTION_OBSERVATIONS = "transaction_observations"  # every sync's rows (the Parquet partitions)
    TRANSACTION_SYNCS = "transaction_syncs"
    TRANSACTIONS = "transactions"  # latest observed state per transaction
    TRANSACTION_STATUS_HISTORY = "transaction_status_history"
    # stored by each load for the dates it can change (storage/reconciliation_rows.py)
    ROLLFORWARD_WINDOWS = "rollforward_windows"  # the rows of v_balance_rollforward
    HISTORY_BREAKS = "history_breaks"  # the history checks' rows of v_reconciliation_breaks
    RECONCILIATION_ROWS_STATE = "reconciliation_rows_state"  # what the stored rows were computed with


class Check(StrEnum):
    """Asset check names; what each checks and whether it blocks is in ``domain.checks``."""

    # on the balances partition
    SCHEMA = "schema_matches"
    AMOUNTS_VALID = "amounts_valid"
    KEYS_UNIQUE = "keys_unique"
    AVAILABLE_NOT_ABOVE_TOTAL = "available_not_above_total"
    CANONICAL_MATCHES_DECIMAL = "canonical_matches_decimal"
    AMOUNT_TOO_WIDE = "amount_too_wide"
    UNKNOWN_CURRENCY = "unknown_currency"
    CURRENCY_DISAPPEARED = "currency_disappeared"
    ZERO_ITEMS = "zero_items"
    # on the transactions sync's partition (schema, amounts and currency checks share the names above)
    TRANSACTION_IDS_UNIQUE = "transaction_ids_unique"
    STATUS_TRANSITIONS_LEGAL = "status_transitions_legal"
    AMOUNT_MISSING = "amount_missing"
    KNOWN_TRANSACTION_MISSING = "known_transaction_missing"
    # on the reconciliation asset
    NO_NEW_BREAKS = "no_new_reconciliation_breaks"
    # Dagster's time-partition freshness check on the partition (defs/catchup.py): evaluated by its
    # own sensor, never inside a day's run, so it is not in domain.checks
    FRESHNESS = "freshness_check"


class ReconciliationCheck(StrEnum):
    """Every ``check_name`` that ``v_reconciliation_breaks`` emits (the SQL spells the same strings)."""

    AMOUNT_TOO_WIDE = Check.AMOUNT_TOO_WIDE.value  # NOAH amount does not fit DECIMAL(38,18)
    NEGATIVE_PENDING_OUTFLOW = "negative_pending_outflow"  # available > total
    SNAPSHOT_GAP = "snapshot_gap"  # no row for a key on a day inside its history
    CURRENCY_DISAPPEARED = Check.CURRENCY_DISAPPEARED.value  # key absent from the next snapshot date
    STALE_BALANCE = "stale_balance"  # total unchanged for more than stale_after_days
    LEDGER_BREAK = "ledger_break"  # NOAH and ledger differ beyond tolerance (or cannot be compared)
    MISSING_AT_NOAH = "missing_at_noah"  # ledger asserts a key NOAH did not report that day
    MISSING_IN_LEDGER = "missing_in_ledger"  # NOAH reports a key the ledger does not assert that day
    ROLLFORWARD_UNEXPLAINED = "rollforward_unexplained"  # total moved by more or less than the settled transactions
    PENDING_UNEXPLAINED = "pending_unexplained"  # total - available differs from the Pending Out transactions


class View(StrEnum):
    """SQL view names; each has one file in sql/ named NN_<view>.sql."""

    LATEST_BALANCES = "v_latest_balances"
    BALANCE_CHANGES = "v_balance_changes"
    PENDING_OUTFLOWS = "v_pending_outflows"
    SNAPSHOT_GAPS = "v_snapshot_gaps"
    CURRENCY_CHANGES = "v_currency_changes"
    STALE_BALANCES = "v_stale_balances"
    LEDGER_RECONCILIATION = "v_ledger_reconciliation"
    BALANCE_ROLLFORWARD = "v_balance_rollforward"
    PENDING_EXPLAINED = "v_pending_explained"
    DAILY_BALANCES = "v_daily_balances"
    RECONCILIATION_BREAKS = "v_reconciliation_breaks"
    RECONCILIATION_SUMMARY = "v_reconciliation_summary"


# Documented currency codes (shared/noah/README.md); anything else is a warning, never a crash.
SANDBOX_CURRENCIES = ("BTC_TEST", "ETH_TEST_SEPOLIA", "USDC_TEST")
PRODUCTION_CURRENCIES = ("BTC", "ETH", "USDC")
DOCUMENTED_CURRENCIES = SANDBOX_CURRENCIES + PRODUCTION_CURRENCIES
