"""The HTTP layer under the client: a whole-request deadline, a response size limit, and the
transport failures that no retry can heal.

httpx bounds each socket operation (connect, each read, each write) but not a request as a whole:
a server that sends one byte a second never trips a read timeout. So the client's connections go
through a network backend that also enforces a per-thread deadline, set around each request with
``request_deadline``: every socket operation gets at most the time left, and none starts after the
deadline. Sync httpx runs a request entirely in the calling thread, which is what makes a
thread-local deadline exact, for the status line and headers as much as for the body.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

_deadline = threading.local()


class Deadline:
    """The moment a request must have ended by."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at


@contextmanager
def request_deadline(seconds: float) -> Iterator[Deadline]:
    """Every socket operation of this thread's requests inside the block ends by ``seconds`` from now."""
    previous = getattr(_deadline, "at", None)
    deadline = Deadline(seconds)
    _deadline.at = deadline.at
    try:
        yield deadline
    finally:
        _deadline.at = previous


def _time_left(timeout: float | None, timeout_error: type[Exception]) -> float | None:
    """``timeout`` cut to what is left of the thread's deadline; raises once the deadline passed."""
    at = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise timeout_error("the request deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose reads and writes end by the thread's request deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, _time_left(timeout, httpcore.ConnectTimeout))
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Opens connections whose every operation respects the thread's request deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _time_left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, _time_left(timeout, httpcore.ConnectTimeout), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport, with its connection pool opening deadline-bound connections."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # httpx exposes no network-backend option; the pool (direct or through a proxy) reads
        # this attribute whenever it opens a connection. test_hostile_servers covers it.
        pool = self._pool
        pool._network_backend = _DeadlineBackend(pool._network_backend)


class _DeadlineClient(httpx.Client):
    """An ``httpx.Client`` whose connections, proxied ones included, honour ``request_deadline``."""

    def _init_proxy_transport(self, proxy: httpx.Proxy, **kwargs: Any) -> httpx.BaseTransport:  # type: ignore[override]  # httpx's private hook; **kwargs forwards whatever keywords it passes
        return _DeadlineTransport(proxy=proxy, **kwargs)


def deadline_bound_client(*, timeout_s: float, max_connections: int) -> httpx.Client:
    """A pooled HTTP client for ServiceTitan; wrap each request in ``request_deadline``."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return _DeadlineClient(timeout=timeout_s, limits=limits, transport=_DeadlineTransport(limits=limits))


class ResponseTooLarge(Exception):
    """The response body is larger than the configured limit (nothing past the limit was read)."""

    def __init__(self, limit_bytes: int, announced: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.announced = announced
        super().__init__(f"response larger than {limit_bytes} bytes")


def read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    """The body of a streamed response, refusing (``ResponseTooLarge``) one beyond ``max_bytes``."""
    announced = response.headers.get("Content-Length")
    if announced and announced.isdigit() and int(announced) > max_bytes:
        raise ResponseTooLarge(max_bytes, int(announced))
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def unhealable_cause(exc: httpx.TransportError) -> str | None:
    """What to fix when a transport error cannot heal by retrying (a wrong scheme, a TLS mismatch);
    ``None`` for the errors a retry may cure (timeouts, refused or dropped connections)."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "the URL's scheme is not http:// or https://; fix the configured URL"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the server's TLS certificate is not trusted ({cause.verify_message}); check the configured "
                "URL's host name, or the machine's CA certificates"
            )
        if isinstance(cause, ssl.SSLError):
            reason = cause.reason or type(cause).__name__
            return (
                f"the TLS handshake failed ({reason}): the server at this address does not speak https — "
                "check whether the configured URL should start with http:// or use another port"
            )
        cause = cause.__cause__ or cause.__context__
    return None
