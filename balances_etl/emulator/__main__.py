"""``balances-etl sandbox``: run the NOAH sandbox emulator in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from balances_etl.emulator.auth import generate_signing_keypair
from balances_etl.emulator.dataset import ENVIRONMENTS
from balances_etl.emulator.server import NoahSandbox


_SIGNAL_CHECK_SECONDS = 0.2  # how often the waiting main thread wakes to act on Ctrl-C / SIGTERM
_EXAMPLE_FAULT = '{"kind": "RATE_LIMIT", "page": 2, "retry_after": "1"}'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balances-etl sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free port, printed)")
    parser.add_argument("--environment", choices=ENVIRONMENTS, default="sandbox")
    parser.add_argument(
        "--api-key", help="the accepted X-Api-Key (default apikey_sandbox_emulator / apikey_prod_emulator)"
    )
    signing = parser.add_mutually_exclusive_group()
    signing.add_argument(
        "--public-key", type=Path, metavar="PEM_PATH", help="verify Api-Signature with this EC public key"
    )
    signing.add_argument("--unsigned", action="store_true", help="accept calls without Api-Signature")
    parser.add_argument("--items", type=int, default=3, help="number of balances in the account (default 3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--date", type=datetime.date.fromisoformat, help="simulated date YYYY-MM-DD (default: today, UTC)"
    )
    return parser


def _write_keypair(directory: Path) -> tuple[Path, bytes]:
    """A fresh P-384 pair in ``directory``: private.pem (mode 0600) and public.pem."""
    private_pem, public_pem = generate_signing_keypair("P-384")
    private_path = directory / "private.pem"
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(private_pem)
    (directory / "public.pem").write_bytes(public_pem)
    return private_path, public_pem


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    key_directory = None
    private_path = None
    public_pem = None
    if args.public_key:
        public_pem = args.public_key.read_bytes()
    elif not args.unsigned:
        key_directory = Path(tempfile.mkdtemp(prefix="noah-sandbox-"))
        private_path, public_pem = _write_keypair(key_directory)

    stopped = threading.Event()
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        # SIGINT too, explicitly: a process started from a script or in the background inherits an
        # ignored SIGINT, and Python then never raises KeyboardInterrupt (seen in CI).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopped.set())
    sandbox = NoahSandbox(
        api_key=args.api_key,
        public_key_pem=public_pem,
        host=args.host,
        port=args.port,
        seed=args.seed,
        simulated_date=args.date,
        item_count=args.items,
        environment=args.environment,
    )
    try:
        with sandbox:
            _print_banner(sandbox, private_path, args.public_key)
            # Wake up now and then: a signal the kernel hands to a server thread only sets a flag,
            # which the main thread acts on when it next runs (a bare wait() could sleep forever).
            while not stopped.wait(_SIGNAL_CHECK_SECONDS):
                pass
    finally:
        if key_directory is not None:
            shutil.rmtree(key_directory, ignore_errors=True)
    print("NOAH sandbox stopped.", flush=True)
    return 0


def _print_banner(sandbox: NoahSandbox, private_path: Path | None, public_key_path: Path | None) -> None:
    control = sandbox.base_url.removesuffix("/v1") + "/_sandbox"
    config = sandbox.config
    if private_path is not None:
        signing = f"required (ES384)\n  private key:    {private_path} (P-384, mode 0600, deleted on exit)"
    elif public_key_path is not None:
        signing = f"required, verified with {public_key_path}"
    else:
        signing = "not required (unsigned calls accepted)"
    lines = [
        f"NOAH {sandbox.environment} emulator running",
        f"  base URL:       {sandbox.base_url}",
        f"  API key:        {sandbox.api_key}",
        f"  Api-Signature:  {signing}",
        f"  data:           seed {config.seed}, {config.item_count} items, date {config.effective_date}"
        + ("" if config.simulated_date else " (follows UTC today)"),
        f"  control:        curl -s {control}/config",
        f"                  curl -s -X POST {control}/faults -d '{_EXAMPLE_FAULT}'",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
