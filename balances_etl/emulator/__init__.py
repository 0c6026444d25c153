"""An embedded NOAH sandbox: a real HTTP server that behaves as NOAH's published balances and
transactions API.

Tests, the demo and the benchmarks run against it; ``balances-etl sandbox`` runs it standalone.
"""

from balances_etl.emulator.auth import generate_signing_keypair
from balances_etl.emulator.faults import Fault, FaultKind
from balances_etl.emulator.config import SandboxConfig
from balances_etl.emulator.server import NoahSandbox
from balances_etl.emulator.wire import Exchange, RecordedRequest

__all__ = [
    "Exchange", "Fault", "FaultKind", "NoahSandbox", "RecordedRequest", "SandboxConfig", "generate_signing_keypair",
]
