"""Alerts delivered to a real local webhook receiver and a real local SMTP server: words, once per event,
retries that never raise, and no secret anywhere."""

from __future__ import annotations

import datetime as dt
import email.policy
import json
import logging
import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from balances_etl.operations.alerts import (
    Alert,
    AlertLedger,
    AlertSender,
    AlertSettings,
    Channel,
    SmtpSettings,
    alert_events,
    send_alerts,
)
from balances_etl.operations.days import Attempt, Policy, RunState, judge_days
from balances_etl.settings import SettingsError

DAY = dt.date(2026, 11, 20)
POLICY = Policy(dt.date(2026, 1, 1), dt.timedelta(hours=36), dt.time(0, 10), dt.time(2, 0))
NOW = dt.datetime(2026, 11, 21, 0, 40, tzinfo=dt.UTC)
NOAH_INSTANCE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
TOKEN = "T0SECRET/B0SECRET/xoxbSecretWebhookToken42"
PASSWORD = "smtp-pass-Zq81!secret"
FAILURE = (f"NOAH page 1: gave up after 6 attempts; last error: NOAH returned HTTP 503 Service Unavailable on page 1: "
           f"Detail 'maintenance' (Type 'ServiceUnavailable', Instance '{NOAH_INSTANCE}')")


def failed_day_alerts() -> list[Alert]:
    attempt = Attempt("f00dfeed" + "0" * 28, DAY, RunState.FAILED, NOW - dt.timedelta(minutes=30),
                      NOW - dt.timedelta(minutes=25), "schedule", FAILURE, NOAH_INSTANCE)
    return alert_events(NOW, judge_days(NOW, [DAY], {}, [attempt], POLICY), POLICY)


class Receiver:
    """An incoming-webhook stand-in on 127.0.0.1: records every POST; the first ``fail`` get HTTP 500."""

    def __init__(self, fail: int = 0) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        self.fail = fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, self.headers["Content-Type"], body))
                status = 500 if receiver.fail > 0 else 200
                receiver.fail -= 1
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [json.loads(body)["text"] for _, _, body in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001, ANN201 - aiosmtpd's hook
        self.messages.append(message_from_bytes(envelope.original_content, policy=email.policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=_authenticate, auth_require_tls=False)
    controller.start()
    yield inbox, port
    controller.stop()


def smtp_settings(port: int, password: str = PASSWORD) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, starttls=False, user="alerts", password=password,
                        sender="balances-etl@example.com", recipients=("treasury@example.com", "data@example.com"))


def sender(settings: AlertSettings, pauses: list[float] | None = None) -> AlertSender:
    return AlertSender(settings, timeout_seconds=5, sleep=(pauses if pauses is not None else []).append)


def all_logs(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


def test_the_webhook_gets_each_event_once_naming_day_failure_instance_time_left_and_command(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    ledger, alerts = AlertLedger(tmp_path / "alerts.json"), failed_day_alerts()
    send = sender(AlertSettings(webhook_url=receiver.url))
    with caplog.at_level(logging.INFO):
        first = send_alerts(alerts, ledger, send, NOW)
        for minutes in (10, 20, 30):  # the sensor's next ticks
            assert send_alerts(alerts, ledger, send, NOW + dt.timedelta(minutes=minutes)) == []
    assert first == [(f"run_failed/{DAY}", Channel.LOG), (f"run_failed/{DAY}", Channel.WEBHOOK)]
    assert len(receiver.posts) == 1
    path, content_type, _ = receiver.posts[0]
    assert content_type == "application/json" and path == f"/services/{TOKEN}"
    [text] = receiver.texts()
    for expected in (str(DAY), "HTTP 503 Service Unavailable", NOAH_INSTANCE, "recoverable until 2026-11-22 12:00 UTC",
                     "35 h 20 min from now", "catch-up tries again by itself at 2026-11-21 00:40 UTC",
                     f"balances-etl materialize --date {DAY}"):
        assert expected in text
    assert TOKEN not in text and "T0SECRET" not in all_logs(caplog)


def test_a_failed_webhook_delivery_is_retried_with_backoff_and_logged_without_the_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    receiver, pauses = Receiver(fail=2), []
    try:
        with caplog.at_level(logging.WARNING):
            delivered = send_alerts(failed_day_alerts(), AlertLedger(tmp_path / "a.json"),
                                    sender(AlertSettings(webhook_url=receiver.url), pauses), NOW)
    finally:
        receiver.close()
    assert (f"run_failed/{DAY}", Channel.WEBHOOK) in delivered
    assert len(receiver.posts) == 3 and pauses == [1.0, 2.0]
    failures = [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    assert failures == [f"alert run_failed/{DAY}: webhook delivery failed (attempt {n} of 3): HTTP 500 Internal Server Error"
                        for n in (1, 2)]
    assert "SECRET" not in all_logs(caplog) and "127.0.0.1" not in "\n".join(failures)


def test_a_dead_webhook_never_raises_and_the_next_tick_delivers(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    ledger, alerts = AlertLedger(tmp_path / "alerts.json"), failed_day_alerts()
    dead = f"http://127.0.0.1:{free_port()}/services/{TOKEN}"
    with caplog.at_level(logging.WARNING):
        assert send_alerts(alerts, ledger, sender(AlertSettings(webhook_url=dead)), NOW) == [
            (f"run_failed/{DAY}", Channel.LOG)]
    assert "ConnectionRefusedError" in all_logs(caplog) and "SECRET" not in all_logs(caplog)
    receiver = Receiver()
    try:
        later = send_alerts(alerts, ledger, sender(AlertSettings(webhook_url=receiver.url)), NOW + dt.timedelta(minutes=10))
    finally:
        receiver.close()
    assert later == [(f"run_failed/{DAY}", Channel.WEBHOOK)] and len(receiver.posts) == 1


def test_alerts_are_e_mailed_through_smtp_with_login_and_no_password_anywhere(
    smtp_server: tuple[Inbox, int], receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    inbox, port = smtp_server
    settings = AlertSettings(webhook_url=receiver.url, smtp=smtp_settings(port))
    with caplog.at_level(logging.DEBUG):
        delivered = send_alerts(failed_day_alerts(), AlertLedger(tmp_path / "a.json"), sender(settings), NOW)
        assert send_alerts(failed_day_alerts(), AlertLedger(tmp_path / "a.json"), sender(settings), NOW) == []
    assert {channel for _, channel in delivered} == {Channel.LOG, Channel.WEBHOOK, Channel.EMAIL}
    [message] = inbox.messages
    assert message["Subject"] == f"balances-etl: run for {DAY} failed, recoverable until 2026-11-22 12:00 UTC"
    assert inbox.envelopes == [("balances-etl@example.com", ["treasury@example.com", "data@example.com"])]
    body = message.get_payload(decode=True).decode()
    assert NOAH_INSTANCE in body and f"balances-etl materialize --date {DAY}" in body
    assert PASSWORD not in message.as_string() and PASSWORD not in all_logs(caplog)
    assert PASSWORD not in repr(settings) and TOKEN not in repr(settings)


def test_a_refused_smtp_login_is_logged_without_the_password_and_not_raised(
    smtp_server: tuple[Inbox, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    inbox, port = smtp_server
    wrong = "wrong-" + PASSWORD
    with caplog.at_level(logging.WARNING):
        delivered = send_alerts(failed_day_alerts(), AlertLedger(tmp_path / "a.json"),
                                sender(AlertSettings(smtp=smtp_settings(port, wrong))), NOW)
    assert Channel.EMAIL not in {channel for _, channel in delivered} and inbox.messages == []
    logs = all_logs(caplog)
    assert "email delivery failed (attempt 3 of 3): SMTPAuthenticationError" in logs
    assert wrong not in logs and PASSWORD not in logs


def test_alert_settings_from_the_environment_refuse_without_showing_a_value():
    good = {"BALANCES_ETL_ALERT_WEBHOOK_URL": f"https://hooks.example.com/services/{TOKEN}",
            "BALANCES_ETL_ALERT_SMTP_HOST": "smtp.example.com", "BALANCES_ETL_ALERT_SMTP_PASSWORD": PASSWORD,
            "BALANCES_ETL_ALERT_SMTP_FROM": "etl@example.com", "BALANCES_ETL_ALERT_SMTP_TO": "a@example.com, b@example.com"}
    settings = AlertSettings.from_env(good)
    assert settings.channels == [Channel.LOG, Channel.WEBHOOK, Channel.EMAIL]
    assert settings.smtp is not None and settings.smtp.port == 587 and settings.smtp.starttls
    assert settings.smtp.recipients == ("a@example.com", "b@example.com")
    assert AlertSettings.from_env({}).channels == [Channel.LOG]
    with pytest.raises(SettingsError) as bad_url:
        AlertSettings.from_env({"BALANCES_ETL_ALERT_WEBHOOK_URL": f"hooks.example.com/{TOKEN}"})
    assert "BALANCES_ETL_ALERT_WEBHOOK_URL" in str(bad_url.value) and TOKEN not in str(bad_url.value)
    with pytest.raises(SettingsError, match="BALANCES_ETL_ALERT_SMTP_TO is required"):
        AlertSettings.from_env({k: v for k, v in good.items() if k != "BALANCES_ETL_ALERT_SMTP_TO"})


def test_a_bad_alert_setting_leaves_alerts_in_the_log_only_and_says_which(caplog: pytest.LogCaptureFixture):
    log = logging.getLogger("test.alerts")
    with caplog.at_level(logging.ERROR, logger="test.alerts"):
        settings = AlertSettings.from_env_or_log_only({"BALANCES_ETL_ALERT_WEBHOOK_URL": f"ftp://x/{TOKEN}"}, log)
    assert settings.channels == [Channel.LOG]
    assert "BALANCES_ETL_ALERT_WEBHOOK_URL" in all_logs(caplog) and TOKEN not in all_logs(caplog)
