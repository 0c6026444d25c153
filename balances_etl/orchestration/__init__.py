"""Dagster infrastructure: running the daily job in-process, instance storage, and cleaning up after killed runs."""
