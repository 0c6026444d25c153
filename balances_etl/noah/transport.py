"""HTTP for the NOAH client: one small interface, the standard library's ``http.client`` underneath.

The client needs one thing from HTTP: send a GET and get back the status, headers and the whole
body, or a :class:`TransportError` when no complete response arrived. Keeping that behind
:class:`Transport` lets tests answer from a script and record what was sent, through the same
client code a real account uses.

Why not requests or urllib3: a balances snapshot is a strictly sequential chain of small pages
(each request needs the previous page's token) to one host over one keep-alive connection. On
loopback, requests' session machinery cost about 0.9 ms a page and urllib3's pool about 0.4 ms,
against roughly 3 ms for the whole round trip (see docs/performance.md); one persistent
``http.client`` connection does that job with nothing in between.

What they would have given us is kept: TLS verified against ``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE`` (else certifi's bundle); ``HTTPS_PROXY`` /
``HTTP_PROXY`` / ``ALL_PROXY`` with ``NO_PROXY`` (a CONNECT tunnel for https, credentials in the
proxy URL sent as Proxy-Authorization); separate connect and read timeouts; a keep-alive
connection the server closed while idle is reopened before use, not failed; gzip/deflate bodies
decoded. Redirects are never followed and nothing is retried here: the client decides. ``.netrc``
is never consulted: NOAH authenticates with the API key and the signature.
"""

from __future__ import annotations

import base64
import http.client
import os
import select
import socket
import ssl
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True)
class HttpResponse:
    """A complete response; ``headers.get`` looks names up case-insensitively."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportError(Exception):
    """No complete response: refused, reset, timed out or cut off mid-body. Worth another attempt.

    ``reason`` is our own wording; library messages can embed the URL, page token included.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Transport(Protocol):
    def get(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        while_waiting: Callable[[], None] | None = None,
    ) -> HttpResponse:
        """One GET. ``while_waiting`` runs once the request is sent, before the response is read
        (so the caller's work overlaps the server's); what it raises propagates unchanged."""
        ...

    def close(self) -> None: ...


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy the environment names for ``url`` (honouring NO_PROXY), or None."""
    environ = os.environ if environ is None else environ
    proxies = {
        name[: -len("_proxy")].lower(): value
        for name, value in environ.items()
        if name.lower().endswith("_proxy") and value
    }
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass_environment(parts.netloc, proxies):
        return None
    return proxy


def ca_bundle(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    for name in CA_BUNDLE_VARIABLES:
        if environ.get(name):
            return environ[name]
    import certifi

    return certifi.where()


class HttpClientTransport:
    """One persistent connection to the NOAH host (through the proxy the environment names, if any)."""

    def __init__(self, url: str) -> None:
        target = urlsplit(url)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise ValueError("the NOAH base URL must be an absolute http(s) URL")
        self._https = target.scheme == "https"
        self._host = target.hostname
        self._port = target.port or (443 if self._https else 80)
        self._context = ssl.create_default_context(cafile=ca_bundle()) if self._https else None
        self._proxy = urlsplit(proxy) if (proxy := proxy_for(url)) else None
        self._proxy_headers: dict[str, str] = {}
        if self._proxy is not None and self._proxy.username:
            credentials = f"{unquote(self._proxy.username)}:{unquote(self._proxy.password or '')}"
            self._proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        self._connection: http.client.HTTPConnection | None = None

    def get(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        while_waiting: Callable[[], None] | None = None,
    ) -> HttpResponse:
        target = urlsplit(url)
        if (target.hostname, target.port or self._port) != (self._host, self._port):
            raise ValueError("this transport serves one host: the NOAH base URL's")
        plain_http_proxy = self._proxy is not None and not self._https
        path = url if plain_http_proxy else (target.path + (f"?{target.query}" if target.query else ""))
        request_headers = {**headers, **(self._proxy_headers if plain_http_proxy else {})}
        connection = self._connect(timeout)
        with self._closed_on_failure(timeout):
            connection.request("GET", path, headers=request_headers)
        if while_waiting is not None:
            try:
                while_waiting()
            except BaseException:
                self.close()  # the response is never read: this connection cannot carry another request
                raise
        with self._closed_on_failure(timeout):
            response = connection.getresponse()
            body = response.read()
            status, response_headers = response.status, response.headers
        if response.will_close:
            self.close()
        encoding = (response_headers.get("Content-Encoding") or "").strip().lower()
        if encoding in _DECODERS and body:
            try:
                body = zlib.decompress(body, _DECODERS[encoding])
            except zlib.error:
                raise TransportError(f"the body could not be decoded (Content-Encoding: {encoding})") from None
        return HttpResponse(status=status, headers=response_headers, body=body)

    @contextmanager
    def _closed_on_failure(self, timeout: tuple[float, float]) -> Iterator[None]:
        """Socket and protocol failures become :class:`TransportError`; the connection is dropped,
        since its state is unknown (the next attempt opens a new one)."""
        try:
            yield
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise TransportError(_failure(error, "read", timeout[1])) from None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self, timeout: tuple[float, float]) -> http.client.HTTPConnection:
        """The open connection, or a new one; the read timeout applies once connected."""
        connection = self._connection
        if connection is not None and connection.sock is not None and _closed_by_peer(connection.sock):
            self.close()
            connection = None
        if connection is None:
            host, port = (self._proxy.hostname, self._proxy.port or 80) if self._proxy else (self._host, self._port)
            if self._https:
                connection = http.client.HTTPSConnection(host, port, timeout=timeout[0], context=self._context)
                if self._proxy is not None:
                    connection.set_tunnel(self._host, self._port, headers=self._proxy_headers)
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout[0])
            self._connection = connection
        if connection.sock is None:
            connection.timeout = timeout[0]
            try:
                connection.connect()
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise TransportError(_failure(error, "connect", timeout[0])) from None
        connection.sock.settimeout(timeout[1])
        return connection


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed (or reset) by the server."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _failure(error: BaseException, phase: str, seconds: float) -> str:
    """Why no complete response arrived, in words that never quote the URL."""
    if isinstance(error, TimeoutError):
        return f"{phase} timed out after {seconds:g} s"
    if isinstance(error, http.client.IncompleteRead):
        return "connection dropped while reading the body (incomplete read)"
    return f"connection failed ({type(error).__name__})"
