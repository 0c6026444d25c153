"""The steps of a day: take the snapshot (fetch, land, build, check, publish) and reconcile it, as plain functions."""
