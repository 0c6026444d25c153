"""The client's HTTP transport over real sockets: TLS verification, proxies, keep-alive, encodings.

The emulator tests cover plain HTTP on loopback; these cover what a real NOAH account adds:
HTTPS checked against a CA bundle, a corporate proxy (plain and CONNECT tunnel, with
credentials), a server that closes an idle keep-alive connection, and compressed bodies.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from balances_etl.noah.transport import HttpClientTransport, TransportError, ca_bundle, proxy_for

TIMEOUT = (2.0, 2.0)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, str]]]

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        self.server.seen.append((self.path, dict(self.headers)))  # type: ignore[attr-defined]
        body = b'{"Items": [], "PageToken": null}'
        headers = {"Content-Type": "application/json"}
        if self.path.endswith("gzip"):
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        self.send_response(200)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url_of(httpd: ThreadingHTTPServer, scheme: str = "http", path: str = "/v1/balances?PageSize=1") -> str:
    return f"{scheme}://127.0.0.1:{httpd.server_address[1]}{path}"


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "balances-etl test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_server(server: ThreadingHTTPServer, tmp_path: Path) -> tuple[ThreadingHTTPServer, Path]:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server, cert


def test_proxy_is_read_from_the_environment_and_no_proxy_is_honoured() -> None:
    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "http_proxy": "http://plain.corp:80", "NO_PROXY": "localhost,.internal"}
    assert proxy_for("https://api.noah.com/v1/balances", env) == "http://proxy.corp:3128"
    assert proxy_for("http://127.0.0.1:8080/v1/balances", env) == "http://plain.corp:80"
    assert proxy_for("https://noah.internal/v1", env) is None
    assert proxy_for("https://localhost:8443/v1", env) is None
    assert proxy_for("https://api.noah.com/v1", {"ALL_PROXY": "http://all.corp:1"}) == "http://all.corp:1"
    assert proxy_for("https://api.noah.com/v1", {}) is None


def test_ca_bundle_follows_the_usual_variables_then_certifi() -> None:
    import certifi

    assert ca_bundle({"SSL_CERT_FILE": "/c", "REQUESTS_CA_BUNDLE": "/a", "CURL_CA_BUNDLE": "/b"}) == "/a"
    assert ca_bundle({"SSL_CERT_FILE": "/c", "CURL_CA_BUNDLE": "/b"}) == "/b"
    assert ca_bundle({"SSL_CERT_FILE": "/c"}) == "/c"
    assert ca_bundle({}) == certifi.where()


def test_https_is_verified_against_the_configured_bundle(
    tls_server: tuple[ThreadingHTTPServer, Path], no_proxy_env: pytest.MonkeyPatch
) -> None:
    httpd, cert = tls_server
    with pytest.raises(TransportError, match=r"connection failed \(SSLCertVerificationError\)"):
        HttpClientTransport(url_of(httpd, "https")).get(url_of(httpd, "https"), {}, TIMEOUT)
    no_proxy_env.setenv("REQUESTS_CA_BUNDLE", str(cert))
    transport = HttpClientTransport(url_of(httpd, "https"))
    response = transport.get(url_of(httpd, "https"), {"X-Api-Key": "k"}, TIMEOUT)
    transport.close()
    assert response.status == 200 and response.body.startswith(b'{"Items"')
    assert httpd.seen[0][1]["X-Api-Key"] == "k"  # type: ignore[attr-defined]


def test_keep_alive_is_reused_and_reopened_after_the_server_closes_it(
    server: ThreadingHTTPServer, no_proxy_env: pytest.MonkeyPatch
) -> None:
    accepted: list[object] = []
    original = server.get_request

    def counting_get_request() -> tuple[socket.socket, object]:
        connection = original()
        accepted.append(connection)
        return connection

    server.get_request = counting_get_request  # type: ignore[method-assign]
    transport = HttpClientTransport(url_of(server))
    for _ in range(3):
        assert transport.get(url_of(server), {}, TIMEOUT).status == 200
    assert len(accepted) == 1  # one connection for three requests
    accepted[0][0].shutdown(socket.SHUT_RDWR)  # type: ignore[index]  # the server drops the idle connection
    assert transport.get(url_of(server), {}, TIMEOUT).status == 200
    assert len(accepted) == 2
    transport.close()


def test_work_while_waiting_runs_after_sending_and_its_errors_pass_through(
    server: ThreadingHTTPServer, no_proxy_env: pytest.MonkeyPatch
) -> None:
    transport = HttpClientTransport(url_of(server))
    requests_seen: list[int] = []
    response = transport.get(url_of(server), {}, TIMEOUT, lambda: requests_seen.append(len(server.seen)))
    assert response.status == 200
    # The server may not have parsed the request yet, but it was sent: it is never sent after the work.
    assert requests_seen in ([0], [1])

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as caught:
        transport.get(url_of(server), {}, TIMEOUT, disk_full)
    assert not isinstance(caught.value, TransportError)  # the caller's failure, not the network's
    assert transport.get(url_of(server), {}, TIMEOUT).status == 200  # the unread response was dropped
    assert len(server.seen) == 3
    transport.close()


def test_gzip_bodies_are_decoded(server: ThreadingHTTPServer, no_proxy_env: pytest.MonkeyPatch) -> None:
    transport = HttpClientTransport(url_of(server))
    response = transport.get(url_of(server, path="/v1/balances?as=gzip"), {}, TIMEOUT)
    transport.close()
    assert response.body == b'{"Items": [], "PageToken": null}' and response.headers.get("content-encoding") == "gzip"


class TunnelProxy:
    """A minimal forward proxy: CONNECT tunnels, and absolute-form plain HTTP relayed to the target."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request_heads: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        self.request_heads.append(head)
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if method == b"CONNECT":
            host, port = target.decode().rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            netloc = target.decode().split("/")[2]
            host, port = netloc.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            upstream.sendall(head)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_https_through_a_connect_proxy_with_credentials(
    tls_server: tuple[ThreadingHTTPServer, Path], no_proxy_env: pytest.MonkeyPatch
) -> None:
    httpd, cert = tls_server
    proxy = TunnelProxy()
    no_proxy_env.setenv("HTTPS_PROXY", f"http://svc%40corp:p%3Ass@127.0.0.1:{proxy.port}")
    no_proxy_env.setenv("REQUESTS_CA_BUNDLE", str(cert))
    transport = HttpClientTransport(url_of(httpd, "https"))
    response = transport.get(url_of(httpd, "https"), {}, TIMEOUT)
    transport.close()
    proxy.close()
    assert response.status == 200
    connect = proxy.request_heads[0].decode()
    assert connect.startswith(f"CONNECT 127.0.0.1:{httpd.server_address[1]} HTTP/1.")
    assert "Proxy-Authorization: Basic c3ZjQGNvcnA6cDpzcw==" in connect  # base64("svc@corp:p:ss")


def test_plain_http_through_a_proxy_uses_the_absolute_url(
    server: ThreadingHTTPServer, no_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = TunnelProxy()
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    transport = HttpClientTransport(url_of(server))
    response = transport.get(url_of(server), {}, TIMEOUT)
    transport.close()
    proxy.close()
    assert response.status == 200
    assert proxy.request_heads[0].startswith(f"GET {url_of(server)} HTTP/1.1".encode())


def test_refused_and_timed_out_connections_are_transport_errors(no_proxy_env: pytest.MonkeyPatch) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(TransportError, match=r"connection failed \(ConnectionRefusedError\)"):
        HttpClientTransport(f"http://127.0.0.1:{port}/v1").get(f"http://127.0.0.1:{port}/v1/balances", {}, TIMEOUT)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never answers
    port = silent.getsockname()[1]
    with pytest.raises(TransportError, match=r"read timed out after 0.2 s"):
        HttpClientTransport(f"http://127.0.0.1:{port}/v1").get(f"http://127.0.0.1:{port}/v1/balances", {}, (2.0, 0.2))
    silent.close()
