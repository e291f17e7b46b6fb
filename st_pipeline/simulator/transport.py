"""The HTTP layer of the simulator: a threading server and its request handler.

The handler parses a request, hands it to the :class:`~st_pipeline.simulator.server.Simulator`
and sends what it answers. Misbehaviour that lives on the wire is done here: the configured
latency and slow answers are slept in the request's own thread (so concurrent requests
overlap), a dropped request closes the connection without a response, and a dripped answer
sends its body a few bytes at a time (until it is done, the client goes away, or the server
stops).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from st_pipeline.simulator.errors import ApiError, problem
from st_pipeline.simulator.reply import JSON, Reply
from st_pipeline.simulator.store import dumpb

if TYPE_CHECKING:
    from st_pipeline.simulator.server import Simulator

_log = logging.getLogger(__name__)

TOKEN_PATH = "/connect/token"
CONTROL_PREFIX = "/_simulator/"


class SimulatorServer(ThreadingHTTPServer):
    """A thread per connection; keeps track of open connections so that stop can close them."""

    daemon_threads = True
    allow_reuse_address = True
    simulator: Simulator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.stopping = threading.Event()
        """Set by :meth:`close_connections`: handlers that are waiting (dripping) give up."""
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake up handler threads waiting on idle keep-alive connections or dripping a body,
        and make them finish."""
        self.stopping.set()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RequestHandler(BaseHTTPRequestHandler):
    """Routes a request to the token endpoint, the controls or the API, and sends the reply."""

    protocol_version = "HTTP/1.1"
    server_version = "st-simulator"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body are separate writes
    timeout = 120  # idle keep-alive connections are closed after this long
    server: SimulatorServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # silent: request lines could carry query values we do not want in logs

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            return self.rfile.read(int(length))
        except ValueError:
            self.close_connection = True
            return b""

    def _dispatch(self, method: str) -> None:
        simulator = self.server.simulator
        body = self._read_body()  # always, so that the next request on the connection parses
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        if path.startswith(CONTROL_PREFIX):
            if method == "GET":
                status, payload = simulator.handle_control(path)
            elif method == "POST":
                status, payload = simulator.handle_control_change(path, parts.query)
            else:
                status, payload = 405, dumpb(problem(405, "Simulator controls take GET or POST."))
            self._send(Reply(status, payload), count=False)
            return
        if path == TOKEN_PATH:
            if method != "POST":
                reply = Reply(405, dumpb({"error": "invalid_request"}), {"Allow": "POST"})
            else:
                reply = simulator.handle_token(body, self.headers.get("Authorization"))
            self._send(reply)
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = simulator.handle_api(method, path, parts.query, headers, body)
        except ApiError as error:
            reply = Reply(error.status, dumpb(error.body()), error.headers)
        except Exception:  # noqa: BLE001 - answer 500 rather than drop the connection
            _log.exception("simulator failed on %s %s", method, path)
            reply = Reply(500, dumpb(problem(500, "Internal simulator error.")))
        self._send(reply)

    def _send(self, reply: Reply, count: bool = True) -> None:
        """Send ``reply``; ``count`` it (and delay it) unless it answers a control request."""
        simulator = self.server.simulator
        if count:
            delay = simulator.config.latency_s + reply.delay_s
            if delay > 0:
                time.sleep(delay)
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if count:
            simulator.stats.record_response(reply.status)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type or JSON)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if reply.drip_bytes_per_s is None:
            self.wfile.write(reply.body)
        else:
            self._drip(reply.body, reply.drip_bytes_per_s)

    def _drip(self, body: bytes, bytes_per_s: float) -> None:
        """Write ``body`` at ``bytes_per_s``; stop early (and close the connection) when the
        client disconnects or the server stops. At most one write per chunk of the body."""
        chunk = max(1, int(bytes_per_s / 10))
        interval = chunk / bytes_per_s
        stopping = self.server.stopping
        for offset in range(0, len(body), chunk):
            if offset and stopping.wait(interval):
                self.close_connection = True
                return
            try:
                self.wfile.write(body[offset : offset + chunk])
            except OSError:  # the client went away (or stop() shut the socket down)
                self.close_connection = True
                return
