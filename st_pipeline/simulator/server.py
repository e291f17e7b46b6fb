"""The simulator: a real HTTP server that answers like ServiceTitan's API and token endpoint.

Routes come from the endpoint catalogue (every endpoint of every served dataset). Requests are
checked the way the real gateway checks them: the ``ST-App-Key`` header, then the bearer token,
then that the token's tenant is the tenant in the path; then the rate limit (if configured);
then that the endpoint exists for the tenant (``hide_modules``) and takes the method, and that
the tenant granted its scopes (``deny_scopes``); then faults (queued or planned, see
``faults``). A correct answer may then be made to misbehave (``misbehave``, see ``quirks``).
Token requests may be answered with queued faults too (``inject_token_faults``). A few
``/_simulator/…`` paths expose the ground truth and the request counters to out-of-process
demos and benchmarks; they need no credentials.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote
from zoneinfo import ZoneInfo

from st_pipeline.servicetitan.catalogue import Catalogue, load_catalogue
from st_pipeline.simulator import feeds, marketing_reports, reports
from st_pipeline.simulator.clock import REFERENCE_END_TICKS, TICKS_PER_SECOND, SimClock
from st_pipeline.simulator.config import SimulatorConfig
from st_pipeline.simulator.data import TenantData, generate_tenant, plan_for
from st_pipeline.simulator.errors import (
    TITLE_FORBIDDEN,
    TITLE_NO_APP_KEY,
    TITLE_NOT_FOUND,
    TITLE_UNAUTHORIZED,
    ApiError,
    problem,
)
from st_pipeline.simulator.faults import FaultDraws, FaultInjector, FaultPlan, token_error_reply
from st_pipeline.simulator.quirks import Quirks, damage_body
from st_pipeline.simulator.ratelimit import RateLimiter, WindowLimiter
from st_pipeline.simulator.reply import Reply
from st_pipeline.simulator.report_figures import Calendar
from st_pipeline.simulator.reports import ReportField, TenantReports
from st_pipeline.simulator.routes import RouteTable, tenant_in_path
from st_pipeline.simulator.stats import SimulatorStats
from st_pipeline.simulator.store import StoredRecord, dumpb, join_json
from st_pipeline.simulator.tokens import TokenStore
from st_pipeline.simulator.transport import (
    CONTROL_PREFIX,
    TOKEN_PATH,
    RequestHandler,
    SimulatorServer,
)

__all__ = ["CONTROL_PREFIX", "TOKEN_PATH", "Simulator"]

_CONTROL_DATASET = re.compile(r"^/_simulator/tenants/([^/]+)/datasets/([^/]+)$")
_CONTROL_COUNTS = re.compile(r"^/_simulator/tenants/([^/]+)/counts$")
_CONTROL_CHANGES = re.compile(r"^/_simulator/tenants/([^/]+)/changes$")
_CHANGE_SPACING_TICKS = 10_000  # 1 ms between the records of one apply_changes call
_NO_QUIRKS = Quirks()


class Simulator:
    """An embedded ServiceTitan API: serves generated data for the configured tenants.

    Use as a context manager (``with Simulator(config) as sim: …``) or call :meth:`start` and
    :meth:`stop`. Tenant data is generated on first use and then kept for the simulator's life;
    the ground-truth methods work whether or not the server is running.

    Knobs for hostile behaviour at run time (besides those of ``SimulatorConfig``):

    * :meth:`inject_faults` / :meth:`set_fault_plan`: error statuses (any ``Retry-After``,
      served verbatim), dropped connections, truncated or slow answers;
    * :meth:`inject_token_faults`: the token endpoint answers 429, 5xx, or drops the connection;
    * :meth:`revoke_credentials`, :meth:`set_client_secret`, :meth:`expire_tokens`: 400
      ``invalid_client`` at the token endpoint, 401 at the API;
    * :meth:`deny_scopes` (403) and :meth:`hide_modules` (404): a tenant without some scopes,
      or without whole modules;
    * :meth:`misbehave`: one dataset's 200 answers are wrong — a cursor that is stuck or
      repeats with records, endless pages, a wrong ``totalCount``, absurdly deep JSON, a padded
      body, invalid UTF-8, or a body dripped a few bytes per second;
    * :meth:`tamper_records`: records with wrong types, ``NaN``, missing ids, unknown fields.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.config = config
        self._host = host
        self._port = port
        catalogue = catalogue or load_catalogue()
        self._plan = plan_for(catalogue, config.datasets)
        self.unsupported_datasets: dict[str, str] = dict(self._plan.unsupported)
        """Datasets that cannot be generated, with the reason (e.g. the endpoint serves files)."""
        self._generators = {g.key: g for g in self._plan.generators}
        self._routes = RouteTable(catalogue, [g for g in self._plan.generators if g.key in self._plan.served])
        scopes = {s for e in catalogue.endpoints for s in e.scopes} | {reports.SCOPE_CATEGORIES, reports.SCOPE_REPORTS}
        self.scope = " ".join(sorted(scopes))

        self.clock = SimClock()
        self._started_at = self.clock.now()
        self.tokens = TokenStore(self.clock, config.token_lifetime_s)
        self.stats = SimulatorStats()
        self.faults = FaultInjector()
        self.fault_draws: FaultDraws | None = None
        """The planned faults (``config.faults``), or ``None``."""
        self.set_fault_plan(config.faults)
        self.rate_limiter: RateLimiter | None = None
        """The rate limit (``config.rate_limit_per_s``, or a tenant's own), or ``None``."""
        tenant_limits = {t.tenant_id: t.rate_limit_per_s for t in config.tenants if t.rate_limit_per_s is not None}
        self._tenant_rate_limits: dict[int, float] = tenant_limits
        if config.rate_limit_per_s is not None or tenant_limits:
            self.rate_limiter = RateLimiter(config.rate_limit_per_s or min(tenant_limits.values()))
        self.report_limiter = WindowLimiter(config.report_requests_per_window, config.report_window_s, self.clock.now)
        """The Reporting API's limit per tenant and report (on the simulator's clock)."""
        self._reports: dict[int, TenantReports] = {}
        self._marketing: dict[int, marketing_reports.TenantMarketing] = {}
        self._marketing_damage: dict[tuple[int, str], marketing_reports.Damage] = {}
        self._marketing_endpoints = {
            key: catalogue.dataset(key).extraction_endpoint
            for key in (
                marketing_reports.COST_SUMMARY,
                marketing_reports.PERFORMANCE,
                marketing_reports.ATTRIBUTED_LEADS,
            )
        }
        self._reports_lock = threading.Lock()
        self._stopping = threading.Event()  # ends the token revoker
        self._tenants = {tenant.tenant_id: tenant for tenant in config.tenants}
        self._clients = {tenant.client_id: tenant for tenant in config.tenants}
        self._revoked: frozenset[int] = frozenset(config.revoked_tenants)  # replaced, not changed
        self._revoked_lock = threading.Lock()
        self._denied_scopes: dict[int, frozenset[str]] = {}  # replaced, not changed
        self._hidden_modules: dict[int, frozenset[str]] = {}  # replaced, not changed
        self._quirks: dict[tuple[int, str], Quirks] = {}  # replaced, not changed
        self.token_faults = FaultInjector()
        """The faults queued for the token endpoint (see :meth:`inject_token_faults`)."""
        self._modules = frozenset(e.module for e in catalogue.endpoints)
        self._data: dict[int, TenantData] = {}
        self._data_locks = {tenant_id: threading.Lock() for tenant_id in self._tenants}
        self._change_numbers = itertools.count(1)
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Serve in a daemon thread (port 0 picks a free port); returns ``self``."""
        if self._server is not None:
            return self
        server = SimulatorServer((self._host, self._port), RequestHandler)
        server.simulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop
            name=f"st-simulator:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        if self.config.revoke_tokens_every_s is not None:
            self._stopping.clear()
            threading.Thread(
                target=self._revoke_tokens_forever,
                args=(self.config.revoke_tokens_every_s,),
                name="st-simulator:token-revoker",
                daemon=True,
            ).start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Start (if needed) and block until interrupted with Ctrl-C."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:8123``."""
        return f"http://{self._host}:{self.port}"

    @property
    def auth_url(self) -> str:
        """The OAuth token URL."""
        return self.url + TOKEN_PATH

    # -- ground truth and controls -----------------------------------------------------------

    @property
    def datasets(self) -> tuple[str, ...]:
        """The keys of the served datasets, in generation order."""
        return self._plan.served

    def ground_truth(self, tenant_id: int, dataset_key: str) -> list[dict[str, Any]]:
        """Every current record (active and inactive) in the export shape, sorted by id."""
        store = self._tenant_data(tenant_id).stores[self._served_key(dataset_key)]
        return [record.copy_data() for record in store.records()]

    def record_counts(self, tenant_id: int) -> dict[str, int]:
        """Number of current records per served dataset."""
        stores = self._tenant_data(tenant_id).stores
        return {key: len(stores[key]) for key in self._plan.served}

    def issued_tokens(self, tenant_id: int | None = None) -> list[str]:
        """Every access token the simulator has issued (to one tenant, or to all)."""
        return self.tokens.issued(tenant_id)

    def expire_tokens(self, tenant_id: int | None = None) -> None:
        """Invalidate every token issued (to one tenant, or to all): the next call gets 401."""
        self.tokens.expire(tenant_id)

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator's "now" forward (tokens expire by it; changes are stamped by it)."""
        self.clock.advance(seconds)

    def inject_faults(
        self,
        status: int,
        count: int = 1,
        *,
        tenant_id: int | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        """Answer the next ``count`` authorized API requests (of one tenant, or any) with
        ``status`` instead of data; 429s carry ``Retry-After`` (``retry_after_s``, default 1;
        any value, however absurd, is served verbatim). ``status`` 0 drops the connection
        without a response."""
        self.faults.inject(status, count, tenant_id, retry_after_s)

    def inject_token_faults(self, status: int, count: int = 1, *, retry_after_s: int | None = None) -> None:
        """Answer the next ``count`` token requests (``POST /connect/token``, any client) with
        ``status`` instead of a token: 429 with ``Retry-After`` (``retry_after_s``, default 1)
        and ``{"error": "too_many_requests", …}``; a 5xx with an HTML gateway page; another
        4xx with an OAuth error object; ``status`` 0 drops the connection without a response.
        Each is counted in ``stats.token_faults``."""
        self.token_faults.inject(status, count, None, retry_after_s)

    def clear_faults(self) -> None:
        """Drop the queued faults, of the API and of the token endpoint (the fault plan
        stays)."""
        self.faults.clear()
        self.token_faults.clear()

    def set_fault_plan(self, plan: FaultPlan | None) -> None:
        """Replace the planned faults (``None``: none). Draws start afresh, as in a new
        simulator with this plan."""
        self.fault_draws = None if plan is None else FaultDraws(plan, self.config.seed)

    def revoke_credentials(self, tenant_id: int) -> None:
        """Revoke the tenant's API access: its client gets ``invalid_client`` at the token
        endpoint, and every token already issued to it gets 401, until
        :meth:`restore_credentials`."""
        if tenant_id not in self._tenants:
            raise KeyError(f"tenant {tenant_id} is not configured")
        with self._revoked_lock:
            self._revoked = self._revoked | {tenant_id}

    def deny_scopes(self, tenant_id: int, scopes: set[str] | frozenset[str]) -> None:
        """The tenant has not granted these scopes: endpoints needing any of them answer 403."""
        if tenant_id not in self._tenants:
            raise KeyError(f"tenant {tenant_id} is not configured")
        with self._revoked_lock:
            self._denied_scopes = {**self._denied_scopes, tenant_id: frozenset(scopes)}

    def hide_modules(self, tenant_id: int, modules: set[str] | frozenset[str]) -> None:
        """The tenant does not have these ServiceTitan modules (catalogue ``Endpoint.module``
        names, such as ``"equipmentsystems"``): every endpoint of theirs answers 404 with a
        problem-details body. Replaces the tenant's earlier hidden modules; an empty set
        un-hides them all. Unknown module names raise ``KeyError``."""
        if tenant_id not in self._tenants:
            raise KeyError(f"tenant {tenant_id} is not configured")
        unknown = sorted(set(modules) - self._modules)
        if unknown:
            raise KeyError(f"unknown modules {unknown}; known: {sorted(self._modules)}")
        with self._revoked_lock:
            self._hidden_modules = {**self._hidden_modules, tenant_id: frozenset(modules)}

    def tamper_records(
        self, tenant_id: int, dataset_key: str, edits: dict[int, Callable[[dict[str, Any]], None]]
    ) -> None:
        """Serve some records (by id) changed by ``edit`` from now on, as a misbehaving API would:
        a field of the wrong type, ``NaN``, a missing id, an unknown field. Each edit mutates the
        decoded record in place; the result is served (and is the ground truth) verbatim, and
        ``float("nan")`` is served as the bare ``NaN`` literal."""
        key = self._served_key(dataset_key)
        store = self._tenant_data(tenant_id).stores[key]
        changed = []
        for record_id, edit in edits.items():
            record = store.get(record_id)
            if record is None:
                raise KeyError(f"{dataset_key}: no record {record_id}")
            data = record.copy_data()
            edit(data)
            blob = json.dumps(data, separators=(",", ":")).encode()
            changed.append(StoredRecord(record.id, record.created, record.modified, record.active, blob, record.extras))
        store.apply(changed)

    def restore_credentials(self, tenant_id: int) -> None:
        """Undo :meth:`revoke_credentials`: the client gets tokens again, and tokens issued
        before the revocation work again until they expire."""
        if tenant_id not in self._tenants:
            raise KeyError(f"tenant {tenant_id} is not configured")
        with self._revoked_lock:
            self._revoked = self._revoked - {tenant_id}

    def set_client_secret(self, tenant_id: int, client_secret: str) -> None:
        """The tenant's admin issued a new secret: from now on only it gets tokens."""
        if tenant_id not in self._tenants:
            raise KeyError(f"tenant {tenant_id} is not configured")
        tenant = dataclasses.replace(self._tenants[tenant_id], client_secret=client_secret)
        self._tenants = {**self._tenants, tenant_id: tenant}
        self._clients = {**self._clients, tenant.client_id: tenant}

    def is_revoked(self, tenant_id: int) -> bool:
        """Whether the tenant's credentials are revoked."""
        return tenant_id in self._revoked

    def apply_changes(
        self,
        tenant_id: int,
        dataset_key: str,
        *,
        created: int = 0,
        updated: int = 0,
        deactivated: int = 0,
        deleted: int = 0,
        same_timestamp: bool = False,
    ) -> dict[str, list[int]]:
        """Simulate activity: add, modify, or deactivate records, stamped after every existing
        ``modifiedOn`` (so export feeds and watermarks see them as new changes).

        ``deleted`` records vanish (as a hard delete does from list endpoints). With
        ``same_timestamp`` every change carries one and the same ``modifiedOn`` (real feeds have
        such ties, and clients that resume at "last modifiedOn + 1 ms" lose records on them).
        Returns the affected ids by kind of change. Deterministic for a given sequence of calls.
        """
        key = self._served_key(dataset_key)
        data = self._tenant_data(tenant_id)
        store = data.stores[key]
        generator = self._generators[key]
        number = next(self._change_numbers)
        rng = random.Random(f"{self.config.seed}:{tenant_id}:{key}:changes:{number}")
        elapsed = int((self.clock.now() - self._started_at) * TICKS_PER_SECOND)
        ticks = max(store.max_modified() + 1, REFERENCE_END_TICKS + elapsed)
        existing = store.records()
        picked = rng.sample(existing, min(len(existing), updated + deactivated + deleted))
        spacing = 0 if same_timestamp else _CHANGE_SPACING_TICKS
        changed: list[StoredRecord] = []
        for index, record in enumerate(picked[: updated + deactivated]):
            active = False if index >= updated else None
            changed.append(generator.changed_record(record, ticks, active))
            ticks += spacing
        removed = [record.id for record in picked[updated + deactivated :]]
        added: list[StoredRecord] = []
        next_id = store.max_id()
        for _ in range(created):
            next_id += 1 + rng.randrange(3)
            added.append(generator.new_record(rng, data.pools, next_id, ticks, data.business))
            ticks += spacing
        store.apply(changed, added, removed)
        return {
            "created": [record.id for record in added],
            "updated": [record.id for record in changed[:updated]],
            "deactivated": [record.id for record in changed[updated:]],
            "deleted": removed,
        }

    # -- internals ---------------------------------------------------------------------------

    def _served_key(self, dataset_key: str) -> str:
        if dataset_key not in self._plan.served:
            reason = self.unsupported_datasets.get(dataset_key)
            why = f": {reason}" if reason else " (not in SimulatorConfig.datasets or the catalogue)"
            raise KeyError(f"dataset {dataset_key!r} is not served{why}")
        return dataset_key

    def _tenant_data(self, tenant_id: int) -> TenantData:
        data = self._data.get(tenant_id)
        if data is not None:
            return data
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            raise KeyError(f"tenant {tenant_id} is not configured")
        with self._data_locks[tenant_id]:
            data = self._data.get(tenant_id)
            if data is None:
                scale = self.config.scale_of(tenant)
                data = generate_tenant(self._plan, self.config.seed, tenant_id, scale)
                self._data[tenant_id] = data
        return data

    # -- request handling (called by the HTTP handler) ---------------------------------------

    def handle_token(self, body: bytes, authorization: str | None) -> Reply:
        """``POST /connect/token`` (client credentials in the form, or HTTP Basic); a queued
        token fault, if any, is served instead of the answer (and no token is issued)."""
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
                client_id, _, client_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        tenant = self._clients.get(client_id or "")
        self.stats.record_token_request(tenant.tenant_id if tenant else None)
        fault = self.token_faults.take(None)
        if fault is not None:
            self.stats.record_token_fault()
            if fault.kind == "drop":
                return Reply(0, b"", drop=True)
            return token_error_reply(fault)
        no_cache = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        grant_type = form.get("grant_type")
        if not grant_type:
            return Reply(400, dumpb({"error": "invalid_request"}), no_cache)
        if grant_type != "client_credentials":
            return Reply(400, dumpb({"error": "unsupported_grant_type"}), no_cache)
        if (
            tenant is None
            or tenant.tenant_id in self._revoked
            or not hmac.compare_digest((client_secret or "").encode(), tenant.client_secret.encode())
        ):
            return Reply(400, dumpb({"error": "invalid_client"}), no_cache)
        token = {
            "access_token": self.tokens.issue(tenant.tenant_id),
            "expires_in": self.config.token_lifetime_s,
            "token_type": "Bearer",
            "scope": self.scope,
        }
        return Reply(200, dumpb(token), no_cache)

    def handle_api(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes = b"") -> Reply:
        """One API request; ``headers`` have lower-case names. Raises ``ApiError``."""
        path_tenant = tenant_in_path(path)
        self.stats.record_api_request(path_tenant)
        app_key = headers.get("st-app-key", "")
        if not hmac.compare_digest(app_key.encode(), self.config.app_key.encode()):
            raise ApiError(401, TITLE_NO_APP_KEY)
        authorization = headers.get("authorization", "").strip()
        # The official examples send the bare token; most clients send "Bearer <token>".
        if authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        else:
            token = authorization
        token_tenant = self.tokens.tenant_of(token) if token else None
        if token_tenant is None or token_tenant in self._revoked:
            raise ApiError(401, TITLE_UNAUTHORIZED)
        if path_tenant is None:
            raise ApiError(404, TITLE_NOT_FOUND)
        if path_tenant != token_tenant:
            raise ApiError(403, TITLE_FORBIDDEN)
        marketing_key = marketing_reports.match(path)
        if marketing_key is not None:
            self._admit(app_key, path_tenant)
            return self._handle_marketing_report(method, path, query, path_tenant, marketing_key)
        report_path = reports.match(path)
        # The category list is a catalogued dataset: served from its store when it is generated.
        if report_path is not None and (report_path.category is not None or self._routes.match(path) is None):
            return self._handle_reporting(method, path, query, body, path_tenant, report_path)
        self._admit(app_key, path_tenant)
        route = self._routes.match(path)
        if route is None:
            raise ApiError(404, TITLE_NOT_FOUND)
        hidden = self._hidden_modules.get(path_tenant)
        if hidden and route.endpoint.module in hidden:
            raise ApiError(404, TITLE_NOT_FOUND)
        if method != "GET":
            raise ApiError(405, "The simulator serves read endpoints only.", headers={"Allow": "GET"})
        denied = self._denied_scopes.get(path_tenant)
        if denied and denied.intersection(route.endpoint.scopes):
            raise ApiError(403, TITLE_FORBIDDEN)
        fault = self.faults.take(path_tenant)
        if fault is None and self.fault_draws is not None:
            fault = self.fault_draws.draw(path_tenant, method, path, query)
        if fault is not None:
            self.stats.record_injected(path_tenant, fault.kind)
            if fault.is_error:
                return fault.error_reply()
            if fault.kind == "drop":
                return Reply(0, b"", drop=True)
        store = self._tenant_data(path_tenant).stores[route.dataset_key]
        params = feeds.Query(query)
        endpoint = route.endpoint
        quirks = self._quirks.get((path_tenant, route.dataset_key), _NO_QUIRKS)
        if endpoint.kind == "export":
            batch_size = self.config.export_batch_size
            body = feeds.export_body(
                store,
                endpoint,
                route.shape,
                params,
                batch_size,
                repeat_cursor=quirks.repeat_cursor,
                same_page=quirks.same_page,
            )
        elif endpoint.kind == "list":
            body = feeds.list_body(
                store,
                endpoint,
                route.shape,
                params,
                endless_has_more=quirks.endless_has_more,
                same_page=quirks.same_page,
                short_pages=quirks.short_pages,
            )
        else:
            body = feeds.lookup_body(store, endpoint, route.shape, params)
        body = damage_body(self._misbehave(quirks, endpoint.kind, params, body), quirks)
        reply = Reply(200, body, drip_bytes_per_s=quirks.drip_bytes_per_s)
        if fault is not None and fault.kind == "truncate":
            reply.body = body[: len(body) // 2]
        elif fault is not None and fault.kind == "slow":
            reply.delay_s = fault.delay_s
        return reply

    def _handle_reporting(
        self, method: str, path: str, query: str, body: bytes, tenant_id: int, target: reports.ReportPath
    ) -> Reply:
        """A Reporting API request (see ``reports``). ServiceTitan limits these per report, not per
        second: data requests go through the per-report window, the rest are not limited."""
        hidden = self._hidden_modules.get(tenant_id)
        if hidden and "reporting" in hidden:
            raise ApiError(404, TITLE_NOT_FOUND)
        expected = "POST" if target.data else "GET"
        if method != expected:
            raise ApiError(405, f"This endpoint takes {expected}.", headers={"Allow": expected})
        denied = self._denied_scopes.get(tenant_id)
        scope = reports.SCOPE_CATEGORIES if target.category is None else reports.SCOPE_REPORTS
        if denied and scope in denied:
            raise ApiError(403, TITLE_FORBIDDEN)
        tenant_reports = self._reports_of(tenant_id)
        report = None
        if target.category is not None and target.report is not None:
            report = tenant_reports.report(target.category, target.report)
        self.stats.record_accepted(tenant_id, time.monotonic())
        if report is not None and target.data:
            admission = self.report_limiter.admit((tenant_id, report.id))
            self.stats.record_report_request(tenant_id, report.id, admission.allowed)
            if not admission.allowed:
                wait = admission.retry_after_s
                raise ApiError(
                    429, f"Rate limit is exceeded. Try again in {wait} seconds.", headers={"Retry-After": str(wait)}
                )
        fault = self.faults.take(tenant_id)
        if fault is None and self.fault_draws is not None:
            fault = self.fault_draws.draw(tenant_id, method, path, query)
        if fault is not None:
            self.stats.record_injected(tenant_id, fault.kind)
            if fault.is_error:
                return fault.error_reply()
            if fault.kind == "drop":
                return Reply(0, b"", drop=True)
        params = feeds.Query(query)
        if target.category is None:
            answer = tenant_reports.categories_body(params)
        elif report is None:
            answer = tenant_reports.reports_body(target.category, params)
        elif target.data:
            answer = tenant_reports.data_body(report, params, body)
        else:
            answer = dumpb(tenant_reports.definition(report))
        reply = Reply(200, answer)
        if fault is not None and fault.kind == "truncate":
            reply.body = answer[: len(answer) // 2]
        elif fault is not None and fault.kind == "slow":
            reply.delay_s = fault.delay_s
        return reply

    def _handle_marketing_report(self, method: str, path: str, query: str, tenant_id: int, key: str) -> Reply:
        """A marketing report over a date range (see ``marketing_reports``), checked like any endpoint."""
        endpoint = self._marketing_endpoints[key]
        hidden = self._hidden_modules.get(tenant_id)
        if hidden and endpoint.module in hidden:
            raise ApiError(404, TITLE_NOT_FOUND)
        if method != "GET":
            raise ApiError(405, "The simulator serves read endpoints only.", headers={"Allow": "GET"})
        denied = self._denied_scopes.get(tenant_id)
        if denied and denied.intersection(endpoint.scopes):
            raise ApiError(403, TITLE_FORBIDDEN)
        fault = self.faults.take(tenant_id)
        if fault is None and self.fault_draws is not None:
            fault = self.fault_draws.draw(tenant_id, method, path, query)
        if fault is not None:
            self.stats.record_injected(tenant_id, fault.kind)
            if fault.is_error:
                return fault.error_reply()
            if fault.kind == "drop":
                return Reply(0, b"", drop=True)
        damage = self._marketing_damage.get((tenant_id, key))
        answer = self.marketing_reports_of(tenant_id).body(key, feeds.Query(query), damage)
        reply = Reply(200, answer)
        if fault is not None and fault.kind == "truncate":
            reply.body = answer[: len(answer) // 2]
        elif fault is not None and fault.kind == "slow":
            reply.delay_s = fault.delay_s
        return reply

    def marketing_reports_of(self, tenant_id: int) -> marketing_reports.TenantMarketing:
        """The tenant's marketing reports (their figures: ``marketing_reports``), over its current records."""
        found = self._marketing.get(tenant_id)
        if found is not None:
            return found
        data = self._tenant_data(tenant_id)  # KeyError for a tenant that is not configured

        def records(key: str) -> list[StoredRecord] | None:
            store = data.stores.get(key)
            return None if store is None else store.records()

        with self._reports_lock:
            return self._marketing.setdefault(tenant_id, marketing_reports.TenantMarketing(records))

    def damage_marketing_report(
        self, tenant_id: int, dataset_key: str, damage: marketing_reports.Damage | None
    ) -> None:
        """Serve one marketing report's rows of a tenant through ``damage`` (rows in, rows out: wrong
        types, missing fields, ``NaN``...) until called again with ``None``."""
        if dataset_key not in self._marketing_endpoints:
            raise KeyError(f"{dataset_key!r} is not a marketing report; they are {sorted(self._marketing_endpoints)}")
        if damage is None:
            self._marketing_damage.pop((tenant_id, dataset_key), None)
        else:
            self._marketing_damage[(tenant_id, dataset_key)] = damage

    def _reports_of(self, tenant_id: int) -> TenantReports:
        tenant_reports = self._reports.get(tenant_id)
        if tenant_reports is not None:
            return tenant_reports
        data = self._tenant_data(tenant_id)  # KeyError for a tenant that is not configured
        zone = self._tenants[tenant_id].time_zone
        calendar = Calendar(None if zone == "UTC" else ZoneInfo(zone))

        def records(key: str) -> list[StoredRecord] | None:
            store = data.stores.get(key)
            return None if store is None else store.records()

        with self._reports_lock:
            return self._reports.setdefault(
                tenant_id, TenantReports(records, calendar, page_size_cap=self.config.report_page_size_cap)
            )

    def change_report_fields(self, tenant_id: int, report_id: int, fields: Sequence[ReportField]) -> str:
        """Change a report's fields for one tenant, as its owner may (add, rename, drop or reorder
        columns: see :class:`~st_pipeline.simulator.reports.ReportField`); the definition's
        ``modifiedOn`` moves to now (the simulator's clock), and data answers follow the new
        fields at once. Returns the new ``modifiedOn``."""
        elapsed = int((self.clock.now() - self._started_at) * TICKS_PER_SECOND)
        return self._reports_of(tenant_id).change_fields(report_id, fields, REFERENCE_END_TICKS + elapsed)

    @staticmethod
    def _misbehave(quirks: Quirks, kind: str, params: feeds.Query, body: bytes) -> bytes:
        """Apply the stuck cursor and the ``totalCount`` offset to an answer."""
        token = params.get("from")
        if kind == "export" and quirks.stuck_cursor and token:
            return dumpb({"hasMore": True, "continueFrom": token, "data": []})
        if kind == "list" and quirks.total_count_offset:
            document = json.loads(body)
            if document.get("totalCount") is not None:
                document["totalCount"] += quirks.total_count_offset
            return dumpb(document)
        return body

    def misbehave(
        self,
        tenant_id: int,
        dataset_key: str,
        *,
        stuck_cursor: bool = False,
        total_count_offset: int = 0,
        repeat_cursor: bool = False,
        endless_has_more: bool = False,
        same_page: bool = False,
        short_pages: bool = False,
        deep_json_depth: int = 0,
        padding_bytes: int = 0,
        drip_bytes_per_s: float | None = None,
        invalid_utf8: bool = False,
    ) -> None:
        """Make the authorized 200 answers of one dataset of one tenant misbehave. Each call
        replaces the dataset's earlier settings (all off: behave again).

        * ``stuck_cursor`` (export feeds): a request with ``from`` gets ``hasMore`` true, that
          same value as ``continueFrom``, and no data;
        * ``repeat_cursor`` (export feeds): a request with ``from`` gets ``hasMore`` true, that
          same value as ``continueFrom``, and the records of the feed's first batch (requests
          without ``from`` are answered normally); ``stuck_cursor`` wins over it;
        * ``endless_has_more`` (paged lists): every page says ``hasMore`` true; pages past the
          end repeat the last real page's records; ``totalCount`` stays true;
        * ``same_page``: every page says more is waiting and holds the first page's records
          again; an export feed hands out a new ``continueFrom`` each time (requests without
          ``from`` are answered normally);
        * ``short_pages`` (paged lists): page *n* holds only the *n*-th record and says
          ``hasMore`` true, however far past the end;
        * ``total_count_offset`` (paged lists): ``totalCount`` (when asked for) is off by this;
        * ``deep_json_depth``: valid JSON whose ``data`` is arrays nested this deep (a lookup's
          bare array gets such an element first);
        * ``padding_bytes``: an extra top-level ``"padding"`` string field of this many bytes
          (a lookup's bare array: inside its first record);
        * ``invalid_utf8``: the first record's first string value starts with ``\xff\xfe``
          instead of its first character (``Content-Length`` stays right);
        * ``drip_bytes_per_s``: the headers go out at once, the body at this rate (until the
          client disconnects or the simulator stops).

        See :func:`~st_pipeline.simulator.quirks.damage_body` for how the body-damaging ones
        combine. Raises ``KeyError`` for a dataset that is not served, ``ValueError`` for a
        negative depth or padding or a rate that is not positive.
        """
        key = self._served_key(dataset_key)
        quirks = Quirks(
            stuck_cursor=stuck_cursor,
            total_count_offset=total_count_offset,
            repeat_cursor=repeat_cursor,
            endless_has_more=endless_has_more,
            same_page=same_page,
            short_pages=short_pages,
            deep_json_depth=deep_json_depth,
            padding_bytes=padding_bytes,
            drip_bytes_per_s=drip_bytes_per_s,
            invalid_utf8=invalid_utf8,
        )
        self._quirks = {**self._quirks, (tenant_id, key): quirks}

    def _revoke_tokens_forever(self, interval_s: float) -> None:
        """Revoke every token each ``interval_s`` (``config.revoke_tokens_every_s``) until stopped."""
        while not self._stopping.wait(interval_s):
            self.tokens.expire()

    def _admit(self, app_key: str, tenant_id: int) -> None:
        """Apply the rate limit to an authorized request; raises the 429 when over it."""
        limiter = self.rate_limiter
        if limiter is None:
            self.stats.record_accepted(tenant_id, time.monotonic())
            return
        rate = self._tenant_rate_limits.get(tenant_id, self.config.rate_limit_per_s)
        if rate is None:  # limits set for other tenants only
            self.stats.record_accepted(tenant_id, time.monotonic())
            return
        admission = limiter.admit((app_key, tenant_id), rate)
        if not admission.allowed:
            self.stats.record_throttled(tenant_id)
            wait = admission.retry_after_s
            raise ApiError(
                429,
                f"Rate limit is exceeded. Try again in {wait} seconds.",
                headers={"Retry-After": str(wait)},
            )
        self.stats.record_accepted(tenant_id, admission.now)

    def handle_control_change(self, path: str, query: str) -> tuple[int, bytes]:
        """``POST /_simulator/tenants/{tenant}/changes?fraction=0.01``: update that share of every
        served dataset's records (at least one each), as :meth:`apply_changes` does."""
        match = _CONTROL_CHANGES.match(path)
        if match is None:
            return 404, dumpb(problem(404, TITLE_NOT_FOUND))
        try:
            tenant_id = int(match.group(1))
            fraction = float(parse_qs(query).get("fraction", ["0.01"])[0])
            changed = {}
            for key, count in self.record_counts(tenant_id).items():
                if count:
                    ids = self.apply_changes(tenant_id, key, updated=max(1, round(count * fraction)))
                    changed[key] = len(ids["updated"])
        except (KeyError, ValueError) as exc:
            return 404, dumpb(problem(404, str(exc).strip("'\"")))
        return 200, dumpb(changed)

    def handle_control(self, path: str) -> tuple[int, bytes]:
        """``GET /_simulator/…``: health, request counters, and record counts and datasets of
        a tenant."""
        if path == "/_simulator/health":
            return 200, dumpb({"status": "ok", "tenants": sorted(self._tenants)})
        if path == "/_simulator/stats":
            return 200, dumpb(self.stats.snapshot())
        for pattern in (_CONTROL_COUNTS, _CONTROL_DATASET):
            match = pattern.match(path)
            if match is None:
                continue
            try:
                tenant_id = int(match.group(1))
                if pattern is _CONTROL_COUNTS:
                    return 200, dumpb(self.record_counts(tenant_id))
                key = unquote(match.group(2)).replace(".", "/")
                store = self._tenant_data(tenant_id).stores[self._served_key(key)]
                return 200, b"".join((b"[", join_json(store.records()), b"]"))
            except (KeyError, ValueError) as exc:
                return 404, dumpb(problem(404, str(exc).strip("'\"")))
        return 404, dumpb(problem(404, TITLE_NOT_FOUND))
