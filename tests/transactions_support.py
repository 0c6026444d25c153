"""A scripted NOAH ``/v1/transactions`` (newest first, PageToken paging) and a day-by-day pipeline
over it: sync -> Parquet partition -> warehouse load, through the real client and loader."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric import ec
from transports import ScriptedTransport, SentRequest

from balances_etl.noah import NoahClient, NoahConfig
from balances_etl.noah.transport import HttpResponse
from balances_etl.pipeline.transactions_sync import NoahTransactionsSource, TransactionSync, sync_transactions
from balances_etl.settings import PROJECT_ROOT
from balances_etl.storage.parquet import publish_partition
from balances_etl.storage.warehouse import LoadResult, connect_read_only, load_partition
from balances_etl.transforms.normalize import ITEMS_SCHEMA, normalize_snapshot

SQL_DIR = PROJECT_ROOT / "sql"
START = dt.date(2026, 3, 1)
PAGE_SIZE = 10
OVERLAP = dt.timedelta(days=3)


def day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


def at(n: int, hour: int = 12, minute: int = 0) -> dt.datetime:
    """An instant on day(n), UTC."""
    return dt.datetime.combine(day(n), dt.time(hour, minute), tzinfo=dt.UTC)


def sync_instant(snapshot_date: dt.date) -> dt.datetime:
    """When the daily run syncs ``snapshot_date``: just after it ends."""
    return dt.datetime.combine(snapshot_date + dt.timedelta(days=1), dt.time(0, 11), tzinfo=dt.UTC)


def rfc3339(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeNoah:
    """NOAH's transactions list: every transaction newest first, ``PageSize`` per page."""

    transactions: dict[str, dict[str, object]] = field(default_factory=dict)

    def add(self, tx_id: str, created: dt.datetime, status: str = "Pending", *, direction: str = "In",
            amount: str | None = "1.5", fee: str | None = None, currency: str = "BTC_TEST") -> None:
        item: dict[str, object] = {
            "ID": tx_id, "Network": "BitcoinTest", "Created": rfc3339(created), "Status": status,
            "Direction": direction, "CryptoCurrency": currency, "PublicID": f"pub-{tx_id}",
        }
        if amount is not None:
            item["Amount"] = amount
        if fee is not None:
            item["NetworkFee"] = fee
        self.transactions[tx_id] = item

    def set(self, tx_id: str, **fields: object) -> None:
        self.transactions[tx_id].update(fields)

    def listed(self) -> list[dict[str, object]]:
        return sorted(self.transactions.values(), key=lambda item: (str(item["Created"]), str(item["ID"])), reverse=True)

    def answer(self, request: SentRequest) -> HttpResponse:
        query = {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}
        assert urlsplit(request.url).path.endswith("/transactions") and query["SortDirection"] == "DESC"
        start, size = int(query.get("PageToken", "0")), int(query["PageSize"])
        listed = self.listed()
        body: dict[str, object] = {"Items": listed[start:start + size]}
        if start + size < len(listed):
            body["PageToken"] = str(start + size)
        return HttpResponse(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def pages_down_to(self, horizon: dt.datetime | None) -> int:
        """Pages a sync must request: up to the first lying entirely before ``horizon`` (all without one)."""
        listed = self.listed()
        pages = max(1, -(-len(listed) // PAGE_SIZE))
        if horizon is None:
            return pages
        for page in range(pages):
            items = listed[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
            if max(dt.datetime.fromisoformat(str(i["Created"])) for i in items) < horizon:
                return page + 1
        return pages


@dataclass
class Pipeline:
    data_dir: Path
    noah: FakeNoah = field(default_factory=FakeNoah)
    transport: ScriptedTransport | None = None

    def client(self) -> NoahClient:
        self.transport = ScriptedTransport(self.noah.answer)
        config = NoahConfig(api_key="apikey_sandbox_transactions-test", signing_key=ec.generate_private_key(ec.SECP384R1()),
                            page_size=PAGE_SIZE)
        return NoahClient(config, transport=self.transport)

    @property
    def requests(self) -> int:
        assert self.transport is not None
        return len(self.transport.sent)

    def sync(self, snapshot_date: dt.date, *, run_id: str = "testrun-0001") -> TransactionSync:
        source = NoahTransactionsSource(self.client(), sync_instant(snapshot_date), overlap=OVERLAP)
        return sync_transactions(source, self.data_dir, snapshot_date, run_id=run_id)

    def load(self, snapshot_date: dt.date) -> LoadResult:
        return self.load_with(snapshot_date, SQL_DIR)

    def load_with(self, snapshot_date: dt.date, sql_dir: Path) -> LoadResult:
        """The day's warehouse load (a balances partition is published first: loads are per balance day)."""
        publish_partition(self.data_dir, snapshot_date, balances_frame(snapshot_date))
        return load_partition(self.data_dir, snapshot_date, sql_dir)

    def run(self, snapshot_date: dt.date, *, run_id: str = "testrun-0001") -> TransactionSync:
        sync = self.sync(snapshot_date, run_id=run_id)
        self.load(snapshot_date)
        return sync

    def query(self, sql: str, params: list[object] | None = None) -> list[tuple]:
        con = connect_read_only(self.data_dir)
        try:
            con.execute("SET TimeZone = 'UTC'")
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def tables(self) -> dict[str, list[tuple]]:
        """Every transactions table of the published warehouse, in a stable order."""
        return {
            "transaction_observations": self.query("SELECT * FROM transaction_observations ORDER BY ALL"),
            "transactions": self.query("SELECT * FROM transactions ORDER BY ALL"),
            "transaction_status_history": self.query("SELECT * FROM transaction_status_history ORDER BY ALL"),
            "transaction_syncs": self.query("SELECT * FROM transaction_syncs ORDER BY ALL"),
        }

    def status_history(self, tx_id: str) -> list[tuple[str, dt.date]]:
        return [tuple(row) for row in self.query(
            "SELECT status, snapshot_date FROM transaction_status_history WHERE transaction_id = ? ORDER BY observed_at",
            [tx_id],
        )]


def balances_frame(snapshot_date: dt.date):  # noqa: ANN201 - a pandas frame
    items = pa.table(
        {"account_type": ["Current"], "crypto_currency": ["BTC_TEST"], "available_raw": ["1"], "total_raw": ["1"],
         "page_number": pa.array([1], pa.int32()), "item_index": pa.array([0], pa.int32())},
        schema=ITEMS_SCHEMA,
    )
    taken_at = dt.datetime.combine(snapshot_date + dt.timedelta(days=1), dt.time(0, 10), tzinfo=dt.UTC)
    return normalize_snapshot(items, snapshot_date=snapshot_date, snapshot_at=taken_at, is_late=False,
                              environment="sandbox")
