"""Dagster wiring only, by domain (``defs/<domain>/``), loaded by ``dg.load_from_defs_folder``.

Each asset turns the result of a plain function (``balances_etl.pipeline``) into materializations
and check results; nothing here fetches, transforms or stores data itself.
"""
