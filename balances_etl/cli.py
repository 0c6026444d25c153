"""`balances-etl`: materialize a day, run the demo, start the UI with the emulator, or run the emulator."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from balances_etl.settings import PipelineSettings, SettingsError, dagster_home, load_env_file

EXIT_FAILED = 1
EXIT_CONFIG = 2


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date as YYYY-MM-DD") from None


DEV_PORT = 3000  # dagster-webserver's own default


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balances-etl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    materialize = commands.add_parser("materialize", help="Snapshot one UTC day: the job the schedule runs.")
    materialize.add_argument("--date", type=_date, required=True, help="the partition, YYYY-MM-DD (a day that has ended)")
    materialize.add_argument("--allow-late", action="store_true", help="record a day older than the lateness allows (is_late=true)")
    materialize.add_argument("--verbose", action="store_true", help="show Dagster's log and stack traces")

    demo = commands.add_parser("demo", help="Run the daily job for N days against the embedded NOAH emulator.")
    demo.add_argument("--days", type=int, default=30, help="how many days to build (default 30)")

    selftest = commands.add_parser("selftest", help="Run the fault matrix end to end against the embedded emulator; print the table.")
    selftest.add_argument("--core", action="store_true", help="only the representative core the default test suite runs")
    selftest.add_argument("--only", action="append", default=[], metavar="KEY", help="only this scenario (repeatable)")
    selftest.add_argument("--report", type=Path, help="also write the table as a markdown document to this file")
    selftest.add_argument("--keep", action="store_true", help="keep the temporary data dir and Dagster home")

    status = commands.add_parser("status", help="Each recent day captured, at risk or lost; exit 0 well, 1 at risk, 2 lost.")
    status.add_argument("--days", type=int, default=7, help="how many of the last days to show (default 7)")
    status.add_argument("--json", action="store_true", help="print JSON instead of lines")

    rebuild = commands.add_parser(
        "rebuild", help="Rebuild warehouse.duckdb from the Parquet store (or first the store from the raw landings).")
    rebuild.add_argument("--from-raw", action="store_true",
                         help="first rebuild the Parquet partitions from the raw landings (normalisation and blocking checks replayed)")
    rebuild.add_argument("--start", type=_date, help="with --from-raw: the first day replayed (default: the first landed)")
    rebuild.add_argument("--end", type=_date, help="with --from-raw: the last day replayed (default: the last landed)")

    dev_command = commands.add_parser(
        "dev", help="Start the emulator and `dg dev` (Dagster's UI and daemon) wired to it; "
        "SIGINT, SIGTERM or SIGHUP stops them all.")
    dev_command.add_argument("--port", type=_port, default=DEV_PORT,
                             help=f"port of the Dagster UI on 127.0.0.1 (default {DEV_PORT})")
    commands.add_parser("sandbox", help="Run the NOAH sandbox emulator in the foreground.", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    load_env_file()
    if argv[:1] == ["sandbox"]:
        from balances_etl.emulator.__main__ import main as sandbox_main

        return sandbox_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    try:
        PipelineSettings.from_env()
        if args.command == "materialize":
            return materialize(args.date, allow_late=args.allow_late, verbose=args.verbose)
        if args.command == "demo":
            return demo(args.days)
        if args.command == "status":
            return status(args.days, as_json=args.json)
        if args.command == "rebuild":
            return rebuild(from_raw=args.from_raw, start=args.start, end=args.end)
        if args.command == "selftest":
            from balances_etl.selftest import main as selftest_main

            return selftest_main(core_only=args.core, only=args.only, report=args.report, keep=args.keep)
        return dev(port=args.port)
    except SettingsError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG


def materialize(day: dt.date, *, allow_late: bool, verbose: bool) -> int:
    from balances_etl.noah import ConfigError, NoahConfig

    try:
        NoahConfig.from_env()
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    from balances_etl.orchestration.runner import NotAPartitionError, open_instance, run_daily_job

    try:
        outcome = run_daily_job(day, instance=open_instance(), allow_late=allow_late, verbose=verbose)
    except NotAPartitionError as err:
        print(str(err), file=sys.stderr)
        return EXIT_CONFIG
    warnings = [c for c in outcome.checks if not c.passed and not c.blocking]
    for check in warnings:
        print(f"warning: {check.asset} check {check.name} failed ({check.failing_rows} rows)", file=sys.stderr)
    if outcome.success:
        print(f"{day}: materialized {', '.join(outcome.materialized)} (run {outcome.run_id})")
        return 0
    print(f"{day}: run {outcome.run_id} failed\n{outcome.error}", file=sys.stderr)
    return EXIT_FAILED


def demo(days: int) -> int:
    if days < 1:
        print("--days must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    from balances_etl.demo import run_demo

    result = run_demo(days)
    return 0 if result.succeeded else EXIT_FAILED


def rebuild(*, from_raw: bool, start: dt.date | None, end: dt.date | None) -> int:
    """One process, no Dagster run per day: the warehouse is a cache of the store of record."""
    from tqdm import tqdm

    from balances_etl.pipeline.rebuild import RebuildError, rebuild as rebuild_warehouse

    def step(what: str, day: dt.date) -> None:
        bar.set_description(what, refresh=False)
        bar.set_postfix_str(day.isoformat(), refresh=False)
        bar.update(1)

    with tqdm(desc="rebuild", unit="day") as bar:
        try:
            done = rebuild_warehouse(PipelineSettings.from_env(), from_raw=from_raw, start=start, end=end,
                                     progress=step)
        except ValueError as err:  # the options, before anything is touched
            print(str(err), file=sys.stderr)
            return EXIT_CONFIG
        except (RebuildError, FileNotFoundError) as err:
            print(f"rebuild failed, the warehouse is as it was: {err}", file=sys.stderr)
            return EXIT_FAILED
    built = done.warehouse
    replayed = (f"replayed from raw landings: {len(done.replayed_days)} balances days, "
                f"{len(done.replayed_syncs)} transactions syncs; " if from_raw else "")
    print(f"{replayed}{built.published_path}: {built.rows:,} balance rows from {built.partitions:,} partitions, "
          f"{built.transaction_syncs:,} transactions syncs, in {done.seconds:.1f} s")
    return 0


def status(days: int, *, as_json: bool) -> int:
    """Reads the Parquet store and the Dagster instance; starts and changes nothing."""
    if days < 1:
        print("--days must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    import json

    from balances_etl.operations.status import as_json as status_json, collect_status, render_text

    report = collect_status(PipelineSettings.from_env(), dagster_home(), days, dt.datetime.now(dt.UTC))
    print(json.dumps(status_json(report), indent=2) if as_json else render_text(report))
    return int(report.health)


def dev(port: int = DEV_PORT) -> int:
    """The emulator in this process, `dg dev` as a child pointed at it, the UI on 127.0.0.1:``port``.

    `dg dev` runs from the project root it finds above the package (the checkout's pyproject.toml, or
    the copy the wheel ships inside the package), so the folders are passed as absolute paths: they
    stay relative to where `balances-etl dev` was started.

    `dg dev` runs in its own process group (see ``ChildSupervisor``): SIGINT (Ctrl-C), SIGTERM
    (systemd, docker stop, kill) and SIGHUP (a closed terminal) all stop it and every process it
    started (webserver, daemon, code server), within 30 s or by SIGKILL, before this command exits
    with 128 + the signal's number; the emulator and the temporary signing key go with it.
    """
    from balances_etl.emulator import NoahSandbox, generate_signing_keypair
    from balances_etl.orchestration.processes import ChildSupervisor
    from balances_etl.settings import PACKAGE_DIR

    from balances_etl.orchestration.runner import open_instance

    settings = PipelineSettings.from_env()
    home = dagster_home()
    # A new home gets the project's dagster.yaml (pool, one run per day) and its storage once, under
    # the instance lock, before the webserver, daemon and code server all open it at the same moment.
    open_instance().dispose()
    # The handlers go in first: a stop request at any moment from here on leaves nothing behind.
    with ChildSupervisor() as supervisor:
        private_pem, public_pem = generate_signing_keypair(curve="P-384")
        with tempfile.TemporaryDirectory(prefix="balances-etl-dev-") as keys, \
                NoahSandbox(public_key_pem=public_pem) as sandbox:
            key_path = Path(keys) / "noah-signing-key.pem"
            key_path.write_bytes(private_pem)
            key_path.chmod(0o600)
            env = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "BALANCES_ETL_DATA_DIR": str(settings.data_dir),
                "BALANCES_ETL_SQL_DIR": str(settings.sql_dir),
                "NOAH_BASE_URL": sandbox.base_url,
                "NOAH_API_KEY": sandbox.api_key,
                "NOAH_SIGNING_KEY_PATH": str(key_path),
            }
            env.pop("NOAH_SIGNING_KEY", None)
            if sys.prefix != sys.base_prefix:  # dg expects the virtual environment it runs from to be active
                env |= {"VIRTUAL_ENV": sys.prefix, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
            print(f"NOAH emulator at {sandbox.base_url}; starting dg dev on http://127.0.0.1:{port} (Ctrl-C to stop)",
                  flush=True)
            command = [sys.executable, "-m", "dagster_dg_cli.cli", "dev", "--target-path", str(PACKAGE_DIR),
                       "--host", "127.0.0.1", "--port", str(port)]
            return supervisor.run(command, env=env)


def entry_point() -> NoReturn:
    """The ``balances-etl`` command: ``main``, then exit without the interpreter's teardown.

    Everything is written, flushed and closed by the time ``main`` returns; what remains is
    freeing Dagster's ~250,000 objects and ~2,000 modules one by one, 0.5 s of a 2.5 s daily run.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
