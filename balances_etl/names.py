"""Names shared by the pipeline, the SQL views, the checks and the tests: one place to change them."""

from __future__ import annotations

# Dagster assets
RAW_ASSET = "noah_balance_pages"
PARQUET_ASSET = "balance_snapshots_parquet"
WAREHOUSE_ASSET = "balance_snapshots"
RECONCILIATION_ASSET = "balance_reconciliation"
DAILY_JOB = "daily_balances_job"
DAILY_SCHEDULE = "daily_balances_schedule"
DUCKDB_POOL = "duckdb"

# DuckDB tables
SNAPSHOTS_TABLE = "balance_snapshots"
LEDGER_TABLE = "ledger_expected_balances"
SETTINGS_TABLE = "reconciliation_settings"


class Check:
    """Asset check names (blocking ones stop publication)."""

    # blocking, on the Parquet asset
    SCHEMA = "schema_matches"
    AMOUNTS_VALID = "amounts_valid"
    KEYS_UNIQUE = "keys_unique"
    AVAILABLE_NOT_ABOVE_TOTAL = "available_not_above_total"
    CANONICAL_MATCHES_DECIMAL = "canonical_matches_decimal"
    # warnings, on the Parquet asset
    AMOUNT_TOO_WIDE = "amount_too_wide"
    UNKNOWN_CURRENCY = "unknown_currency"
    CURRENCY_DISAPPEARED = "currency_disappeared"
    ZERO_ITEMS = "zero_items"
    # on the reconciliation asset
    NO_NEW_BREAKS = "no_new_reconciliation_breaks"

    BLOCKING = (SCHEMA, AMOUNTS_VALID, KEYS_UNIQUE, AVAILABLE_NOT_ABOVE_TOTAL, CANONICAL_MATCHES_DECIMAL)
    WARNINGS = (AMOUNT_TOO_WIDE, UNKNOWN_CURRENCY, CURRENCY_DISAPPEARED, ZERO_ITEMS)


class ReconciliationCheck:
    """Every ``check_name`` that ``v_reconciliation_breaks`` emits (the SQL spells the same strings)."""

    AMOUNT_TOO_WIDE = Check.AMOUNT_TOO_WIDE  # NOAH amount does not fit DECIMAL(38,18)
    NEGATIVE_PENDING_OUTFLOW = "negative_pending_outflow"  # available > total
    SNAPSHOT_GAP = "snapshot_gap"  # no row for a key on a day inside its history
    CURRENCY_DISAPPEARED = Check.CURRENCY_DISAPPEARED  # key absent from the next snapshot date
    STALE_BALANCE = "stale_balance"  # total unchanged for more than stale_after_days
    LEDGER_BREAK = "ledger_break"  # NOAH and ledger differ beyond tolerance (or cannot be compared)
    MISSING_AT_NOAH = "missing_at_noah"  # ledger asserts a key NOAH did not report that day
    MISSING_IN_LEDGER = "missing_in_ledger"  # NOAH reports a key the ledger does not assert that day

    ALL = (
        AMOUNT_TOO_WIDE,
        NEGATIVE_PENDING_OUTFLOW,
        SNAPSHOT_GAP,
        CURRENCY_DISAPPEARED,
        STALE_BALANCE,
        LEDGER_BREAK,
        MISSING_AT_NOAH,
        MISSING_IN_LEDGER,
    )


class View:
    """SQL view names; each has one file in sql/ named NN_<view>.sql."""

    LATEST_BALANCES = "v_latest_balances"
    BALANCE_CHANGES = "v_balance_changes"
    PENDING_OUTFLOWS = "v_pending_outflows"
    SNAPSHOT_GAPS = "v_snapshot_gaps"
    CURRENCY_CHANGES = "v_currency_changes"
    STALE_BALANCES = "v_stale_balances"
    LEDGER_RECONCILIATION = "v_ledger_reconciliation"
    RECONCILIATION_BREAKS = "v_reconciliation_breaks"
    RECONCILIATION_SUMMARY = "v_reconciliation_summary"

    ALL = (
        LATEST_BALANCES,
        BALANCE_CHANGES,
        PENDING_OUTFLOWS,
        SNAPSHOT_GAPS,
        CURRENCY_CHANGES,
        STALE_BALANCES,
        LEDGER_RECONCILIATION,
        RECONCILIATION_BREAKS,
        RECONCILIATION_SUMMARY,
    )

# Documented currency codes (shared/noah/README.md); anything else is a warning, never a crash.
SANDBOX_CURRENCIES = ("BTC_TEST", "ETH_TEST_SEPOLIA", "USDC_TEST")
PRODUCTION_CURRENCIES = ("BTC", "ETH", "USDC")
DOCUMENTED_CURRENCIES = SANDBOX_CURRENCIES + PRODUCTION_CURRENCIES
