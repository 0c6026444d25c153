"""Running it unattended, as plain code: which days are captured, at risk or lost (`days`), which to
relaunch (`catchup`), who to tell (`alerts`), one sensor tick (`tick`), and `balances-etl status`.

Everything that decides is a pure function of a given ``now``, so tests and simulations drive it
with a simulated clock; only ``history`` reads the Parquet store and the Dagster instance.
"""
