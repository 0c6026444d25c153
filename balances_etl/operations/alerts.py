"""Telling a person: which events deserve an alert, the words, and delivering each one exactly once.

Events: a day's run failed (the first failure of a day; catch-up keeps retrying), its freshness
deadline passed without a snapshot, its lateness window closed without one (lost), and a day
alerted about was captured after all. Each goes to the log and to every configured destination
(an incoming webhook, SMTP); the ledger records each delivery, so a sensor ticking every 10
minutes never repeats one, and a destination that failed is tried again on the next tick.
Delivery never raises: an alerting problem must not break a run or the sensor. The webhook URL
holds a token and the SMTP password is a secret: neither is ever logged nor put in a message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from balances_etl import settings as config
from balances_etl.operations.catchup import Backoff, next_attempt_at
from balances_etl.operations.days import (
    DayReport,
    DayStatus,
    Policy,
    RunState,
    describe_attempt,
    duration,
    first_line,
    utc,
)
from balances_etl.settings import SettingsError
from balances_etl.storage.files import atomic_replace, exclusive_lock

logger = logging.getLogger(__name__)

LEDGER_RETENTION = dt.timedelta(days=90)  # far longer than any day stays in the sensor's view


class AlertKind(StrEnum):
    RUN_FAILED = "run_failed"
    FRESHNESS_MISSED = "freshness_missed"
    LOST = "lost"
    RECOVERED = "recovered"


class Channel(StrEnum):
    LOG = "log"  # always: the sensor's log shows every alert even with no destination set
    WEBHOOK = "webhook"
    EMAIL = "email"


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    day: dt.date
    subject: str
    text: str

    @property
    def key(self) -> str:
        """One event, one key: what the ledger remembers."""
        return f"{self.kind.value}/{self.day.isoformat()}"


def alert_events(
    now: dt.datetime,
    reports: Sequence[DayReport],
    policy: Policy,
    alerted_days: Collection[dt.date] = (),
    backoff: Backoff = Backoff(),
) -> list[Alert]:
    """Every alert-worthy event true at ``now`` (the ledger filters those already delivered).

    ``alerted_days`` are the days a failure or freshness alert was delivered for: only those get a
    "recovered" message once captured.
    """
    alerts = []
    for report in sorted(reports, key=lambda r: r.day):
        day, last = report.day, report.last_attempt
        if report.status is DayStatus.CAPTURED:
            if day in alerted_days:
                alerts.append(_recovered(report))
            continue
        if report.status is DayStatus.LOST:
            alerts.append(_lost(report))
            continue
        if any(a.state is RunState.FAILED for a in report.attempts):
            alerts.append(_run_failed(now, report, policy, backoff))
        if now >= report.fresh_by:
            alerts.append(_freshness_missed(now, report, policy, backoff))
    return alerts


def _left(now: dt.datetime, report: DayReport, policy: Policy, backoff: Backoff) -> str:
    retry = next_attempt_at(report, policy, backoff)
    when = ("a run is in progress" if report.in_flight
            else f"catch-up tries again by itself at {utc(max(retry, now))}" if retry
            else "catch-up will not try again before the window closes")
    return (f"Time left: recoverable until {utc(report.recoverable_until)} "
            f"({duration(report.recoverable_until - now)} from now); {when}.\n"
            f"To take it now: balances-etl materialize --date {report.day.isoformat()}")


def _last_run(report: DayReport) -> str:
    last = report.last_attempt
    if last is None:
        return "No run of the daily job for this day was recorded (is the Dagster daemon running?)."
    failed = [a for a in report.attempts if a.state is RunState.FAILED]
    text = f"Last run: {describe_attempt(last)}."
    instance = next((a.noah_instance for a in reversed(failed) if a.noah_instance), None)
    if instance and instance not in text:
        text += f"\nNOAH Instance reference (for NOAH support): {instance}"
    return text


def _run_failed(now: dt.datetime, report: DayReport, policy: Policy, backoff: Backoff) -> Alert:
    failed = [a for a in report.attempts if a.state is RunState.FAILED]
    first = failed[0]
    what = first_line(first.error or "the run failed", 600)
    text = (f"balances-etl: the daily balances run for {report.day} failed (run {first.run_id[:8]}, "
            f"launched by {first.launched_by}).\nWhat failed: {what}\n")
    if first.noah_instance:
        text += f"NOAH Instance reference (for NOAH support): {first.noah_instance}\n"
    if first is not report.last_attempt:
        text += f"Last run: {describe_attempt(report.last_attempt)}.\n"  # type: ignore[arg-type]
    text += _left(now, report, policy, backoff)
    return Alert(AlertKind.RUN_FAILED, report.day,
                 f"balances-etl: run for {report.day} failed, recoverable until {utc(report.recoverable_until)}", text)


def _freshness_missed(now: dt.datetime, report: DayReport, policy: Policy, backoff: Backoff) -> Alert:
    text = (f"balances-etl: {report.day} was not captured by its freshness deadline {utc(report.fresh_by)} "
            f"(BALANCES_ETL_FRESHNESS_DEADLINE).\n{_last_run(report)}\n{_left(now, report, policy, backoff)}")
    return Alert(AlertKind.FRESHNESS_MISSED, report.day,
                 f"balances-etl: {report.day} not captured by {utc(report.fresh_by)}", text)


def _lost(report: DayReport) -> Alert:
    day = report.day.isoformat()
    text = (f"balances-etl: {day} is lost: its lateness window closed at {utc(report.recoverable_until)} "
            f"(BALANCES_ETL_LATENESS_HOURS) without a snapshot.\n{_last_run(report)}\n"
            "NOAH keeps no balance history: that day's end-of-day balances can no longer be fetched. The day "
            "stays a gap (v_snapshot_gaps; v_daily_balances estimates it from the transactions). To record "
            f"today's balances for it anyway, flagged is_late=true: balances-etl materialize --date {day} --allow-late")
    return Alert(AlertKind.LOST, report.day, f"balances-etl: {day} lost (no snapshot)", text)


def _recovered(report: DayReport) -> Alert:
    assert report.capture is not None
    capture = report.capture
    text = (f"balances-etl: {report.day} recovered: captured at {utc(capture.taken_at)}, "
            f"{duration(capture.delay)} after the day ended" + (", flagged is_late" if capture.is_late else "") + ".")
    return Alert(AlertKind.RECOVERED, report.day, f"balances-etl: {report.day} recovered", text)


# --- destinations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool
    user: str | None
    password: str | None = field(repr=False)
    sender: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class AlertSettings:
    webhook_url: str | None = field(default=None, repr=False)  # holds a token
    smtp: SmtpSettings | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AlertSettings:
        def read(variable: config.Variable) -> object:
            return variable.read_optional(environ, SettingsError)

        smtp = None
        host = read(config.ALERT_SMTP_HOST)
        if host is not None:
            sender, recipients = read(config.ALERT_SMTP_FROM), read(config.ALERT_SMTP_TO)
            for variable, value in ((config.ALERT_SMTP_FROM, sender), (config.ALERT_SMTP_TO, recipients)):
                if not value:
                    raise SettingsError(f"{variable.name} is required with {config.ALERT_SMTP_HOST.name}",
                                        variable=variable.name)
            smtp = SmtpSettings(
                host=str(host), port=int(read(config.ALERT_SMTP_PORT)),  # type: ignore[arg-type]
                starttls=bool(read(config.ALERT_SMTP_STARTTLS)), user=read(config.ALERT_SMTP_USER),  # type: ignore[arg-type]
                password=read(config.ALERT_SMTP_PASSWORD), sender=str(sender), recipients=tuple(recipients),  # type: ignore[arg-type]
            )
        return cls(webhook_url=read(config.ALERT_WEBHOOK_URL), smtp=smtp)  # type: ignore[arg-type]

    @classmethod
    def from_env_or_log_only(cls, environ: Mapping[str, str], log: logging.Logger | logging.LoggerAdapter) -> AlertSettings:
        """A bad alert setting must not stop catch-up: it is logged (by name) and alerts go to the log only."""
        try:
            return cls.from_env(environ)
        except SettingsError as error:
            log.error("alert destinations not used, alerts go to this log only: %s", error)
            return cls()

    @property
    def channels(self) -> list[Channel]:
        return [Channel.LOG] + [Channel.WEBHOOK] * bool(self.webhook_url) + [Channel.EMAIL] * bool(self.smtp)

    @property
    def secrets(self) -> list[str]:
        """Texts that must never appear in a log line or a message, longest first."""
        found = []
        if self.webhook_url:
            parts = urlsplit(self.webhook_url)
            found += [self.webhook_url, parts.netloc + parts.path, parts.path, parts.query]
        if self.smtp and self.smtp.password:
            found.append(self.smtp.password)
        return sorted({s for s in found if len(s) > 1 and s != "/"}, key=len, reverse=True)


class AlertSender:
    """Delivers one alert to one channel, with a few quick retries; returns whether it arrived, never raises."""

    def __init__(self, settings: AlertSettings, *, attempts: int = 3, pause_seconds: float = 1.0,
                 timeout_seconds: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 log: logging.Logger | logging.LoggerAdapter = logger) -> None:
        self.settings = settings
        self._attempts, self._pause, self._timeout, self._sleep, self.log = attempts, pause_seconds, timeout_seconds, sleep, log

    def deliver(self, channel: Channel, alert: Alert) -> bool:
        if channel is Channel.LOG:
            self.log.warning("alert %s: %s", alert.key, self.scrub(alert.text))
            return True
        send = self._post_webhook if channel is Channel.WEBHOOK else self._send_email
        pause = self._pause
        for attempt in range(1, self._attempts + 1):
            try:
                send(alert)
                return True
            except Exception as error:  # noqa: BLE001 - any failure is logged and retried, never raised
                self.log.warning("alert %s: %s delivery failed (attempt %d of %d): %s",
                                  alert.key, channel.value, attempt, self._attempts, self.scrub(_reason(error)))
            if attempt < self._attempts:
                self._sleep(pause)
                pause *= 2
        return False

    def scrub(self, text: str) -> str:
        for secret in self.settings.secrets:
            text = text.replace(secret, "***")
        return text

    def _post_webhook(self, alert: Alert) -> None:
        assert self.settings.webhook_url is not None
        body = json.dumps({"text": self.scrub(alert.text)}).encode()
        request = urllib.request.Request(self.settings.webhook_url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310 - http(s) only (settings)
            response.read()

    def _send_email(self, alert: Alert) -> None:
        smtp = self.settings.smtp
        assert smtp is not None
        message = EmailMessage()
        message["Subject"] = self.scrub(alert.subject)
        message["From"] = smtp.sender
        message["To"] = ", ".join(smtp.recipients)
        message.set_content(self.scrub(alert.text))
        with smtplib.SMTP(smtp.host, smtp.port, timeout=self._timeout) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            client.send_message(message)


def _reason(error: Exception) -> str:
    """Why a delivery failed, without the URL (urllib's errors may carry it)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{type(error.reason).__name__}: {error.reason}"
    return f"{type(error).__name__}: {error}"


# --- the ledger ------------------------------------------------------------------------------------


class AlertLedger:
    """Which alert went to which channel, in a small JSON file (``state/alerts.json`` in the data dir).

    Written atomically under a lock, so a crash never loses or duplicates what was recorded.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> AlertLedger:
        return cls(data_dir / "state" / "alerts.json")

    def read(self) -> dict[str, dict[str, str]]:
        """``{event key: {channel: delivered at}}``; an unreadable file counts as empty (and is logged)."""
        try:
            entries = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.warning("alert ledger %s unreadable (%s): treating it as empty", self.path, type(error).__name__)
            return {}
        return entries if isinstance(entries, dict) else {}

    def record(self, key: str, channel: Channel, at: dt.datetime) -> None:
        with exclusive_lock(self.path.with_suffix(".lock"), timeout_seconds=30):
            entries = self.read()
            entries.setdefault(key, {})[channel.value] = at.isoformat()
            horizon = at - LEDGER_RETENTION
            entries = {k: v for k, v in entries.items()
                       if max(dt.datetime.fromisoformat(t) for t in v.values()) >= horizon}
            with atomic_replace(self.path) as tmp:
                tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))

    def alerted_days(self) -> set[dt.date]:
        """Days a failure or freshness alert reached someone (or the log) for."""
        kinds = {AlertKind.RUN_FAILED.value, AlertKind.FRESHNESS_MISSED.value}
        return {dt.date.fromisoformat(key.split("/", 1)[1]) for key in self.read() if key.split("/", 1)[0] in kinds}


def send_alerts(alerts: Sequence[Alert], ledger: AlertLedger, sender: AlertSender, now: dt.datetime) -> list[tuple[str, Channel]]:
    """Deliver each alert to each channel it has not reached yet; return what was delivered. Never raises.

    A channel that failed (after its retries) is not tried again for the rest of this call: the next
    tick retries it, so a dead webhook costs one alert's retries per tick, not every alert's.
    """
    delivered: list[tuple[str, Channel]] = []
    try:
        done = ledger.read()
        failed: set[Channel] = set()
        for alert in alerts:
            for channel in sender.settings.channels:
                if channel in failed or channel.value in done.get(alert.key, {}):
                    continue
                if sender.deliver(channel, alert):
                    ledger.record(alert.key, channel, now)
                    delivered.append((alert.key, channel))
                else:
                    failed.add(channel)
    except Exception as error:  # noqa: BLE001 - alerting never breaks the sensor
        sender.log.error("alerts not sent: %s", sender.scrub(f"{type(error).__name__}: {error}"))
    return delivered
