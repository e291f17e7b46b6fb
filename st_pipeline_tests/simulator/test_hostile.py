"""Misbehaving-server knobs: cursors that repeat, endless pages, deep, padded, dripped or
non-UTF-8 bodies, hidden modules, and faults at the token endpoint — each checked on the wire."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from st_pipeline.simulator import Simulator
from st_pipeline.simulator.errors import TITLE_NOT_FOUND

from .conftest import (
    HOSTILE_CUSTOMER_LIST,
    HOSTILE_CUSTOMERS,
    HOSTILE_TENANT,
    OTHER_TENANT,
    Serve,
    authorize,
    token_for,
)

CUSTOMERS = "crm/customers"
REASONS = "jpm/jobs/cancel-reasons"
HOSTILE_REASONS = "/jpm/v2/tenant/5001/jobs/cancel-reasons"  # a lookup: a bare JSON array
EQUIPMENT = "equipmentsystems/installed-equipment"
HOSTILE_EQUIPMENT = "/equipmentsystems/v2/tenant/5001/installed-equipment"
HOSTILE_EQUIPMENT_EXPORT = "/equipmentsystems/v2/tenant/5001/export/installed-equipment"
TENANT = HOSTILE_TENANT.tenant_id


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings skipped), counted
    without parsing, so that it works where ``json.loads`` runs out of recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    assert depth == 0 and not in_string, "unbalanced JSON"
    return deepest


def list_depth(value: Any) -> int:
    """How many levels of arrays ``value`` is, following first elements (iteratively)."""
    levels = 0
    while isinstance(value, list):
        levels += 1
        value = value[0] if value else None
    return levels


def first_string_field(record: dict[str, Any]) -> str:
    """The name of the record's first top-level field holding a non-empty string."""
    return next(key for key, value in record.items() if isinstance(value, str) and value)


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread not in before]


# -- cursors and pages ------------------------------------------------------------------------


def test_repeat_cursor_echoes_the_token_with_the_first_page_again(serve: Serve) -> None:
    sim, http = serve()
    normal_first = http.get(HOSTILE_CUSTOMERS).json()
    sim.misbehave(TENANT, CUSTOMERS, repeat_cursor=True)
    first = http.get(HOSTILE_CUSTOMERS).json()
    assert first == normal_first  # without "from": a normal first page
    token = first["continueFrom"]
    for _ in range(3):
        again = http.get(HOSTILE_CUSTOMERS, params={"from": token}).json()
        assert again["hasMore"] is True
        assert again["continueFrom"] == token
        assert again["data"] and again["data"] == first["data"]
    sim.misbehave(TENANT, CUSTOMERS)  # a new call replaces the quirks: all off
    moved = http.get(HOSTILE_CUSTOMERS, params={"from": token}).json()
    assert moved["continueFrom"] != token
    assert {r["id"] for r in moved["data"]}.isdisjoint(r["id"] for r in first["data"])


def test_endless_has_more_repeats_the_last_page_with_the_true_total(serve: Serve) -> None:
    sim, http = serve()
    pages = []
    for page in range(1, 50):  # 20 customers: at most 4 pages of 5
        body = http.get(HOSTILE_CUSTOMER_LIST, params={"page": page, "pageSize": 5, "includeTotal": "true"}).json()
        pages.append(body)
        if not body["hasMore"]:
            break
    assert not pages[-1]["hasMore"] and pages[-1]["data"]
    true_total = pages[0]["totalCount"]
    sim.misbehave(TENANT, CUSTOMERS, endless_has_more=True)
    for page in (1, len(pages), len(pages) + 1, 10_000):
        body = http.get(HOSTILE_CUSTOMER_LIST, params={"page": page, "pageSize": 5, "includeTotal": "true"}).json()
        assert body["hasMore"] is True
        assert body["page"] == page
        assert body["totalCount"] == true_total
        expected = pages[page - 1]["data"] if page <= len(pages) else pages[-1]["data"]
        assert body["data"] == expected


# -- damaged bodies -----------------------------------------------------------------------------


def test_deep_json_nests_data_ten_thousand_levels(serve: Serve) -> None:
    sim, http = serve()
    normal = http.get(HOSTILE_CUSTOMERS).json()
    sim.misbehave(TENANT, CUSTOMERS, deep_json_depth=10_000)
    response = http.get(HOSTILE_CUSTOMERS)
    assert response.status_code == 200
    body = response.content
    assert nesting_depth(body) == 10_000 + 1  # the top-level object, then data's arrays
    assert b"[" * 10_000 + b"]" * 10_000 in body
    with pytest.raises(RecursionError):
        json.loads(body)
    sim.misbehave(TENANT, CUSTOMERS, deep_json_depth=40)
    shallow = http.get(HOSTILE_CUSTOMERS).json()
    assert list_depth(shallow["data"]) == 40
    assert shallow["continueFrom"] == normal["continueFrom"]
    assert shallow["hasMore"] == normal["hasMore"]


def test_deep_json_in_a_bare_array_is_its_first_element(serve: Serve) -> None:
    sim, http = serve(datasets=(CUSTOMERS, REASONS))
    normal = http.get(HOSTILE_REASONS).json()
    assert isinstance(normal, list) and normal
    sim.misbehave(TENANT, REASONS, deep_json_depth=30)
    deep = http.get(HOSTILE_REASONS).json()
    assert list_depth(deep[0]) == 30
    assert deep[1:] == normal


def test_padding_adds_a_top_level_field_of_that_many_bytes(serve: Serve) -> None:
    sim, http = serve()
    normal = http.get(HOSTILE_CUSTOMER_LIST, params={"pageSize": 3})
    sim.misbehave(TENANT, CUSTOMERS, padding_bytes=200_000)
    padded = http.get(HOSTILE_CUSTOMER_LIST, params={"pageSize": 3})
    assert padded.status_code == 200
    assert len(padded.content) >= len(normal.content) + 200_000
    assert int(padded.headers["Content-Length"]) == len(padded.content)
    document = padded.json()
    assert document.pop("padding") == "x" * 200_000
    assert document == normal.json()


def test_padding_in_a_bare_array_goes_into_the_first_record(serve: Serve) -> None:
    sim, http = serve(datasets=(CUSTOMERS, REASONS))
    normal = http.get(HOSTILE_REASONS)
    sim.misbehave(TENANT, REASONS, padding_bytes=5_000)
    padded = http.get(HOSTILE_REASONS)
    assert len(padded.content) >= len(normal.content) + 5_000
    records = padded.json()
    assert records[0].pop("padding") == "x" * 5_000
    assert records == normal.json()


def test_invalid_utf8_breaks_the_first_string_of_the_first_record(serve: Serve) -> None:
    sim, http = serve()
    normal = http.get(HOSTILE_CUSTOMERS).json()
    sim.misbehave(TENANT, CUSTOMERS, invalid_utf8=True)
    response = http.get(HOSTILE_CUSTOMERS)
    body = response.content
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(body)
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    assert body.count(b"\xff\xfe") == 1
    repaired = json.loads(body.replace(b"\xff\xfe", b"?"))  # otherwise well-formed JSON
    field = first_string_field(normal["data"][0])
    original = normal["data"][0][field]
    assert repaired["data"][0][field] == "?" + original[1:]
    repaired["data"][0][field] = original
    assert repaired == normal


def test_invalid_utf8_in_a_bare_array(serve: Serve) -> None:
    sim, http = serve(datasets=(CUSTOMERS, REASONS))
    normal = http.get(HOSTILE_REASONS).json()
    sim.misbehave(TENANT, REASONS, invalid_utf8=True)
    body = http.get(HOSTILE_REASONS).content
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    repaired = json.loads(body.replace(b"\xff\xfe", b"?"))
    field = first_string_field(normal[0])
    assert repaired[0][field] == "?" + normal[0][field][1:]


def test_misbehave_rejects_impossible_settings(serve: Serve) -> None:
    sim, _ = serve()
    with pytest.raises(ValueError, match="deep_json_depth"):
        sim.misbehave(TENANT, CUSTOMERS, deep_json_depth=-1)
    with pytest.raises(ValueError, match="padding_bytes"):
        sim.misbehave(TENANT, CUSTOMERS, padding_bytes=-1)
    with pytest.raises(ValueError, match="drip_bytes_per_s"):
        sim.misbehave(TENANT, CUSTOMERS, drip_bytes_per_s=0)
    with pytest.raises(KeyError):
        sim.misbehave(TENANT, "crm/not-a-dataset", padding_bytes=1)


# -- dripped bodies -----------------------------------------------------------------------------


def test_drip_sends_the_body_in_several_chunks(serve: Serve) -> None:
    sim, http = serve()
    params = {"pageSize": 2}
    expected = http.get(HOSTILE_CUSTOMER_LIST, params=params).content
    rate = len(expected) * 2  # ten chunks of a tenth of that: half a second in all
    sim.misbehave(TENANT, CUSTOMERS, drip_bytes_per_s=rate)
    with http.stream("GET", HOSTILE_CUSTOMER_LIST, params=params) as response:
        assert response.status_code == 200
        length = int(response.headers["Content-Length"])
        chunks = list(response.iter_raw())
    assert len(chunks) > 1
    assert sum(len(chunk) for chunk in chunks) == length == len(expected)
    assert b"".join(chunks) == expected


def start_drip(sim: Simulator, client: httpx.Client) -> tuple[httpx.Response, Iterator[bytes], bytes]:
    """Start a request whose body drips for minutes; returns it, the iterator over its body,
    and the first bytes that iterator gave."""
    sim.misbehave(TENANT, CUSTOMERS, drip_bytes_per_s=50, padding_bytes=20_000)
    authorize(client, sim, HOSTILE_TENANT)
    response = client.send(client.build_request("GET", HOSTILE_CUSTOMERS), stream=True)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) > 20_000
    body = response.iter_raw()
    return response, body, next(body)


@pytest.mark.timeout(20)
def test_a_client_that_disconnects_mid_drip_ends_it(serve: Serve) -> None:
    sim, _ = serve()
    before = set(threading.enumerate())
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        response, _, first = start_drip(sim, client)
        assert first
        handlers = new_threads(before)
        assert len(handlers) == 1  # the connection's handler, still dripping
        response.close()
    for handler in handlers:
        handler.join(timeout=10)  # bounded; the drip alone would take minutes
        assert not handler.is_alive()


@pytest.mark.timeout(20)
def test_stop_is_not_held_up_by_a_drip(serve: Serve) -> None:
    sim, _ = serve()
    before = set(threading.enumerate())
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        response, body, first = start_drip(sim, client)
        handlers = new_threads(before)
        assert first and len(handlers) == 1
        sim.stop()
        for handler in handlers:
            handler.join(timeout=10)
            assert not handler.is_alive()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            for _ in body:  # ends early: the body is cut short
                pass
        response.close()


# -- hidden modules -----------------------------------------------------------------------------


def test_hidden_modules_answer_404_for_every_endpoint_of_theirs(serve: Serve) -> None:
    sim, http = serve(datasets=(CUSTOMERS, EQUIPMENT))
    assert http.get(HOSTILE_EQUIPMENT).status_code == 200
    sim.hide_modules(TENANT, {"equipmentsystems"})
    for path in (HOSTILE_EQUIPMENT, HOSTILE_EQUIPMENT_EXPORT):
        response = http.get(path)
        assert response.status_code == 404
        problem = response.json()
        assert problem["status"] == 404 and problem["title"] == TITLE_NOT_FOUND
    assert http.get(HOSTILE_CUSTOMERS).status_code == 200  # another module
    with httpx.Client(base_url=sim.url, timeout=10) as other:  # another tenant
        authorize(other, sim, OTHER_TENANT)
        path = HOSTILE_EQUIPMENT.replace(str(TENANT), str(OTHER_TENANT.tenant_id))
        assert other.get(path).status_code == 200
    sim.hide_modules(TENANT, set())
    assert http.get(HOSTILE_EQUIPMENT).status_code == 200


def test_hide_modules_rejects_unknown_names(serve: Serve) -> None:
    sim, _ = serve()
    with pytest.raises(KeyError, match="equipment-systems"):
        sim.hide_modules(TENANT, {"equipment-systems"})
    with pytest.raises(KeyError):
        sim.hide_modules(999, {"crm"})


# -- faults -------------------------------------------------------------------------------------


def test_token_endpoint_faults_then_a_token(serve: Serve) -> None:
    sim, http = serve()
    issued_before = len(sim.issued_tokens(TENANT))
    sim.inject_token_faults(429, retry_after_s=7)
    sim.inject_token_faults(429)
    sim.inject_token_faults(503)
    sim.inject_token_faults(0)

    throttled = token_for(http, sim, HOSTILE_TENANT)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    assert throttled.json()["error"] == "too_many_requests"
    assert token_for(http, sim, HOSTILE_TENANT).headers["Retry-After"] == "1"
    unavailable = token_for(http, sim, HOSTILE_TENANT)
    assert unavailable.status_code == 503
    assert unavailable.headers["Content-Type"].startswith("text/html")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        token_for(http, sim, HOSTILE_TENANT)

    token = token_for(http, sim, HOSTILE_TENANT)
    assert token.status_code == 200 and token.json()["access_token"]
    assert len(sim.issued_tokens(TENANT)) == issued_before + 1  # none issued for the faults
    assert sim.stats.token_faults == 4
    assert sim.stats.snapshot()["token_faults"] == 4
    assert sim.stats.injected_total == 0  # API faults are counted apart


def test_token_faults_count_and_clear(serve: Serve) -> None:
    sim, http = serve()
    sim.inject_token_faults(500, count=2)
    assert token_for(http, sim, OTHER_TENANT).status_code == 500  # any client
    sim.clear_faults()
    assert token_for(http, sim, OTHER_TENANT).status_code == 200
    assert sim.stats.token_faults == 1
    with pytest.raises(ValueError):
        sim.inject_token_faults(200)


def test_an_absurd_retry_after_is_served_verbatim(serve: Serve) -> None:
    sim, http = serve()
    sim.inject_faults(429, retry_after_s=999999)
    response = http.get(HOSTILE_CUSTOMERS)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "999999"
    assert "999999" in response.json()["title"]
    assert http.get(HOSTILE_CUSTOMERS).status_code == 200


def test_a_queued_status_0_drops_the_api_connection(serve: Serve) -> None:
    sim, http = serve()
    sim.inject_faults(0, tenant_id=TENANT)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get(HOSTILE_CUSTOMERS)
    assert sim.stats.injected["drop"] == 1
    assert http.get(HOSTILE_CUSTOMERS).status_code == 200
