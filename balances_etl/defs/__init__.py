"""Dagster definitions: assets, checks, resources, partitions and the schedule, wired from plain-Python parts."""
