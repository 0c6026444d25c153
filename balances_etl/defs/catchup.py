"""Unattended operation, wired: the catch-up sensor and the balances partition's freshness check.

The decisions are plain code (``balances_etl.operations``); the sensor only gathers what happened,
turns launches into run requests and lets the alerts go out.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings

import dagster as dg

from balances_etl.defs.daily import daily_job
from balances_etl.defs.metadata import asset_key
from balances_etl.domain.names import BalancesAsset, Orchestration
from balances_etl.operations import history
from balances_etl.operations.alerts import AlertLedger, AlertSender, AlertSettings
from balances_etl.operations.days import Policy
from balances_etl.operations.tick import tick, watched_days
from balances_etl.settings import PipelineSettings

ATTEMPT_TAG = "balances_etl/attempt"

_settings = PipelineSettings.from_env()  # intervals and deadlines are part of the definitions, read at load


@dg.sensor(
    name=Orchestration.CATCHUP_SENSOR.value,
    job=daily_job,
    minimum_interval_seconds=_settings.catchup_every_minutes * 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Relaunches each day still inside its lateness window that has no snapshot and no queued or running "
    "run (backoff 10 min doubling to 2 h after a failure); alerts on failed runs, missed freshness and lost days.",
)
def catchup_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = PipelineSettings.from_env()  # at each tick: data dir and alert destinations may differ per deployment
    now = dt.datetime.now(dt.UTC)
    policy = Policy.from_settings(settings)
    days = watched_days(now, policy)
    sender = AlertSender(AlertSettings.from_env_or_log_only(os.environ, context.log), log=context.log)
    result = tick(now, policy, history.captures(settings.data_dir, days), history.attempts(context.instance, days),
                  AlertLedger.in_data_dir(settings.data_dir), sender)
    requests = [
        dg.RunRequest(run_key=launch.run_key, partition_key=launch.day.isoformat(),
                      tags={ATTEMPT_TAG: str(launch.attempt)})
        for launch in result.launches
    ]
    if requests:
        return dg.SensorResult(run_requests=requests)
    return dg.SensorResult(skip_reason=dg.SkipReason("no missing day is due for a catch-up run"))


# The day that just ended must be materialized by the freshness deadline (UTC). Dagster 1.13 calls
# freshness checks superseded by FreshnessPolicy, but that policy judges the asset's latest
# materialization of any partition (a catch-up of an older day would pass it) and is a preview
# needing `freshness: enabled` in dagster.yaml; the time-partition check asks for that very partition.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    freshness_checks = dg.build_time_partition_freshness_checks(
        assets=[asset_key(BalancesAsset.PARTITION)],
        deadline_cron=f"{_settings.freshness_deadline.minute} {_settings.freshness_deadline.hour} * * *",
        timezone="UTC",
    )
    freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks,
        name=Orchestration.FRESHNESS_SENSOR.value,
        minimum_interval_seconds=_settings.catchup_every_minutes * 60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
