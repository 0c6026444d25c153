"""The sandbox's control surface, so curl and other processes can drive a running emulator.

It lives outside ``/v1``, needs no API key and is not recorded: the emulator is a local test tool
bound to loopback, and anyone who can reach it can already read its data.

- ``GET  /_sandbox/config``   -> {"environment", "signed", "seed", "simulated_date", "effective_date",
                                  "item_count", "items", "transaction_items", "dormant_since", ...}
- ``POST /_sandbox/config``   <- any subset of {"simulated_date": "YYYY-MM-DD" | null, "seed", "item_count",
                                  "items": [...] | null, "ledger_days", "transacting_items",
                                  "transaction_items": [...] | null, "dormant_since": "YYYY-MM-DD",
                                  "dormant_settles": "YYYY-MM-DD" | null}; null date = follow today (UTC),
                                  null items = generated, null dormant_settles = the dormant Pending never settles
- ``GET  /_sandbox/faults``   -> the armed faults (``times`` = firings left)
- ``POST /_sandbox/faults``   <- one fault, with the field names of ``Fault``:
                                 ``{"kind": "RATE_LIMIT", "page": 2, "retry_after": "1"}``
- ``DELETE /_sandbox/faults`` -> disarm all
- ``GET  /_sandbox/requests`` -> the request log; ``DELETE`` forgets it
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from balances_etl.emulator.dataset import Dormancy
from balances_etl.emulator.faults import Fault
from balances_etl.emulator.responses import Response, error_response, json_response

if TYPE_CHECKING:
    from balances_etl.emulator.server import NoahSandbox

CONTROL_PREFIX = "/_sandbox/"
_CONFIG_FIELDS = ("simulated_date", "seed", "item_count", "items", "ledger_days", "transacting_items",
                  "transaction_items", "dormant_since", "dormant_settles")


def handle_control(sandbox: NoahSandbox, method: str, target: str, body: bytes) -> Response:
    path = urlsplit(target).path
    action = f"{method} {path}"
    try:
        match method, path.removeprefix(CONTROL_PREFIX):
            case "GET", "config":
                return json_response(200, _describe(sandbox))
            case "POST", "config":
                sandbox.configure(**_config_changes(_parse(body), sandbox.config.dormancy))
                return json_response(200, _describe(sandbox))
            case "POST", "movements":
                movement = _parse(body)
                if not isinstance(movement, dict) or set(movement) != {"currency", "amount", "on_date"}:
                    raise ValueError('a movement is {"currency": ..., "amount": "<signed decimal>", "on_date": "YYYY-MM-DD"}')
                sandbox.inject_movement(str(movement["currency"]), str(movement["amount"]),
                                        datetime.date.fromisoformat(str(movement["on_date"])))
                return json_response(201, _describe(sandbox))
            case "GET", "faults":
                return json_response(200, [fault.to_json() for fault in sandbox.faults])
            case "POST", "faults":
                fault = Fault.from_json(_parse(body))
                sandbox.add_fault(fault)
                return json_response(201, fault.to_json())
            case "DELETE", "faults":
                sandbox.clear_faults()
                return json_response(200, [])
            case "GET", "requests":
                return json_response(200, [dataclasses.asdict(record) for record in sandbox.requests])
            case "DELETE", "requests":
                sandbox.reset_requests()
                return json_response(200, [])
    except (ValueError, TypeError) as error:
        return error_response(400, "InvalidMessage", str(error), action)
    return error_response(404, "ResourceNotFound", f"No control resource at {action}", action)


def _describe(sandbox: NoahSandbox) -> dict[str, object]:
    return {"environment": sandbox.environment, "signed": sandbox.signed, **sandbox.config.to_json()}


def _parse(body: bytes) -> object:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise ValueError(f"the body is not JSON: {error}") from None


def _config_changes(data: object, dormancy: Dormancy) -> dict[str, object]:
    if not isinstance(data, dict):
        raise ValueError("the configuration is a JSON object")
    unknown = set(data) - set(_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown configuration fields: {sorted(unknown)}")
    changes = dict(data)
    if isinstance(changes.get("simulated_date"), str):
        changes["simulated_date"] = datetime.date.fromisoformat(changes["simulated_date"])
    dates = {name: changes.pop(f"dormant_{name}") for name in ("since", "settles") if f"dormant_{name}" in changes}
    if dates:
        parsed = {name: None if value is None else datetime.date.fromisoformat(str(value)) for name, value in dates.items()}
        changes["dormancy"] = dataclasses.replace(dormancy, **parsed)
    return changes
