"""A local HTTP receiver, a local SMTP server, an incident database and a settable clock."""

from __future__ import annotations

import ipaddress
import json
import queue
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from st_pipeline_tests.support import free_port

WAIT_S = 5.0
SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-pass-CANARY-91b2"


@dataclass(frozen=True)
class Received:
    """One POST as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """A real HTTP server in a thread; records every POST and answers with ``status``."""

    def __init__(self) -> None:
        self.received: queue.Queue[Received] = queue.Queue()
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.received.put(Received(self.path, dict(self.headers.items()), body))
                status = receiver.status
                answer = b"ok" if status < 400 else b"receiver says no"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval only makes ``shutdown`` (teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="alert-http-receiver", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server: its address is (host, port), the host a str
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(WAIT_S)

    def next(self) -> Received:
        """The next POST (waits at most ``WAIT_S``)."""
        return self.received.get(timeout=WAIT_S)

    def drain(self) -> list[Received]:
        """Every POST received so far and not yet taken. Sends are synchronous, so this is exact."""
        return _drain(self.received)


@dataclass(frozen=True)
class Mail:
    """One message as the SMTP server received it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    over_tls: bool = False

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())


class _CollectingHandler:
    def __init__(self, inbox: queue.Queue[Mail]) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's naming
        self.inbox.put(
            Mail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content), session.ssl is not None)
        )
        return "250 Message accepted for delivery"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@dataclass(frozen=True)
class Certificates:
    """A private CA and a server certificate it signed for 127.0.0.1 (PEM files)."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(directory: Path) -> Certificates:
    """Issue a throwaway CA and a server certificate for 127.0.0.1, valid for one day."""
    now = datetime.now(UTC)

    def build(subject: str, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "st_pipeline test CA")])
    ca = (
        build("st_pipeline test CA", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        build("127.0.0.1", ca_name, key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


class SmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1.

    Without ``tls``, AUTH is allowed in the clear (for the test). With ``tls``, the server offers
    STARTTLS with that certificate and refuses mail and AUTH until the client has switched to TLS.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.inbox: queue.Queue[Mail] = queue.Queue()
        self.host = "127.0.0.1"
        self.port = free_port()
        self._controller = Controller(
            _CollectingHandler(self.inbox),
            hostname=self.host,
            port=self.port,
            authenticator=_authenticate,
            auth_require_tls=tls is not None,
            tls_context=tls,
            require_starttls=tls is not None,
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def next(self) -> Mail:
        return self.inbox.get(timeout=WAIT_S)

    def drain(self) -> list[Mail]:
        """Every mail received so far and not yet taken."""
        return _drain(self.inbox)


def _drain(items: queue.Queue[Any]) -> list[Any]:
    taken = []
    while True:
        try:
            taken.append(items.get_nowait())
        except queue.Empty:
            return taken


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture()
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path)


@pytest.fixture()
def tls_smtp_server(certificates: Certificates) -> Iterator[SmtpServer]:
    server = SmtpServer(tls=certificates.server_context())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def refused_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture()
def clock() -> Clock:
    return Clock()
