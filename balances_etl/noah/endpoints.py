"""The NOAH list endpoints the pipeline reads: path, fixed query and item schema, one row each.

Everything else (signing, paging, retries, error bodies, page validation) is one mechanism in
``client`` and ``pages``, configured by these rows; a new endpoint is a new row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from balances_etl.domain.transactions import DIRECTIONS, STATUSES
from balances_etl.noah.items import ItemField, ItemSchema, Kind


@dataclass(frozen=True)
class Endpoint:
    name: str  # in logs and messages: "balances", "transactions"
    path: str  # below the base URL's /v1
    items: ItemSchema
    query: dict[str, str] = field(default_factory=dict)  # sent (and signed) with every page


BALANCES = Endpoint(
    "balances",
    "/balances",
    ItemSchema(
        fields=(
            ItemField("AccountType", "account_type"),
            ItemField("CryptoCurrency", "crypto_currency"),
            ItemField("Available", "available_raw", Kind.AMOUNT),
            ItemField("Total", "total_raw", Kind.AMOUNT),
        ),
        key=("AccountType", "CryptoCurrency"),
    ),
)

TRANSACTIONS = Endpoint(
    "transactions",
    "/transactions",
    ItemSchema(
        fields=(
            ItemField("ID", "transaction_id"),
            ItemField("Network", "network"),
            ItemField("Created", "created_raw", Kind.INSTANT),
            ItemField("Status", "status", Kind.CHOICE, choices=STATUSES),
            ItemField("Direction", "direction", Kind.CHOICE, choices=DIRECTIONS),
            ItemField("CryptoCurrency", "crypto_currency"),
            ItemField("Amount", "amount_raw", Kind.AMOUNT, required=False),
            ItemField("NetworkFee", "network_fee_raw", Kind.AMOUNT, required=False),
            ItemField("PublicID", "public_id", required=False),
            ItemField("ExternalID", "external_id", required=False),
            ItemField("CustomerID", "customer_id", required=False),
        ),
        key=("ID",),
    ),
    query={"SortDirection": "DESC"},  # newest first, so an incremental sync can stop early
)
