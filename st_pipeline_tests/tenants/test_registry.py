"""Encrypted credential store, tenant lifecycle, time zones, key rotation and the audit trail;
onboarding against the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.redaction import redact
from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.errors import InvalidClientError, ServiceTitanError
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.settings import load_settings
from st_pipeline.simulator import Simulator
from st_pipeline.tenants import onboarding
from st_pipeline.tenants.crypto import SecretBox, SecretKeyError, generate_key, key_id
from st_pipeline.tenants.endpoint_selection import EndpointSelection
from st_pipeline.tenants.onboarding import add_tenant, update_credentials
from st_pipeline.tenants.registry import Change, TenantExistsError, TenantRegistry, UnknownTenantError
from st_pipeline.tenants.tables import flags_table, tenants_table
from st_pipeline.tenants.validation import InvalidTenantInput, time_zone_names, validate_time_zone
from st_pipeline_tests.conftest import CANARY_SECRET, TENANT_A

CHANGE = Change("test", actor="tester")


def _registry(home: Path, keys: list[str] | None = None) -> TenantRegistry:
    engine = sa.create_engine(f"sqlite:///{home / 'registry.db'}")
    return TenantRegistry(engine, SecretBox(keys or [generate_key()]))


def test_secret_is_encrypted_at_rest_and_decrypts(local_env: Path) -> None:
    registry = _registry(local_env)
    registry.add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE)
    assert CANARY_SECRET.encode() not in (local_env / "registry.db").read_bytes()
    assert registry.credentials(4101).client_secret.get_secret_value() == CANARY_SECRET
    assert [t.tenant_id for t in registry.list()] == [4101]
    assert CANARY_SECRET not in repr(registry.list()) + repr(registry.credentials(4101))


def test_a_decrypted_secret_is_known_to_the_redactor(local_env: Path) -> None:
    # No shape a pattern would catch: only registration can remove it.
    plain = "plainword-registered-on-decrypt-9d2"
    registry = _registry(local_env)
    registry.add(4101, "Acme", "cid.acme", SecretStr(plain), change=CHANGE)
    assert plain in redact(f"reason: {plain}")  # not known before it is loaded
    registry.credentials(4101)
    assert redact(f"the server echoed {plain} back") == "the server echoed [redacted] back"


def test_add_refuses_an_existing_id_and_changes_nothing(local_env: Path) -> None:
    registry = _registry(local_env)
    registry.add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE)
    registry.set_enabled(4101, False, change=CHANGE)
    before = registry.get(4101)
    with pytest.raises(TenantExistsError, match="already registered.*update-credentials --tenant 4101"):
        registry.add(4101, "Other", "cid.other", SecretStr("cs1.other"), change=CHANGE)
    assert registry.get(4101) == before and not before.enabled
    assert registry.credentials(4101).client_secret.get_secret_value() == CANARY_SECRET


@pytest.mark.parametrize(
    ("tenant_id", "name", "client_id", "message"),
    [
        (0, "Zero", "cid.x", "between 1 and"),
        (-5, "Negative", "cid.x", "positive whole number"),
        (2**70, "Huge", "cid.x", "between 1 and"),
        (7, "", "cid.x", "must not be empty"),
        (7, "   ", "cid.x", "must not be empty"),
        (7, "two\nlines", "cid.x", "printable"),
        (7, "evil\u202etxt.exe", "cid.x", "printable"),
        (7, "x" * 201, "cid.x", "at most 200"),
        (7, "Fine", "cid with space", "client id"),
        (7, "Fine", "", "client id"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(
    local_env: Path, tenant_id: int, name: str, client_id: str, message: str
) -> None:
    registry = _registry(local_env)
    with pytest.raises(InvalidTenantInput, match=message):
        registry.add(tenant_id, name, client_id, SecretStr(CANARY_SECRET), change=CHANGE)
    assert registry.list() == [] and registry.history() == []


def test_update_disable_enable_remove_and_the_audit_trail(local_env: Path) -> None:
    registry = _registry(local_env)
    registry.add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=Change("tenant add", actor="alice"))
    EndpointSelection(registry.engine).set("payroll", enabled=False, tenant_id=4101, change=CHANGE)
    registry.flag_needs_credentials(4101, "invalid_client", change=Change("sensor", actor="dagster"))
    assert registry.needing_credentials() == {4101: "invalid_client"}

    registry.update_credentials(
        4101,
        SecretStr("cs1.new-secret"),
        client_id="cid.acme2",
        change=Change("tenant update-credentials", actor="bob"),
    )
    assert registry.needing_credentials() == {}  # new credentials resume the tenant
    assert registry.credentials(4101).client_secret.get_secret_value() == "cs1.new-secret"
    assert registry.get(4101).client_id == "cid.acme2"
    assert not registry.set_enabled(4101, False, reason="paused by ops", change=CHANGE).enabled
    assert registry.set_enabled(4101, True, change=CHANGE).enabled

    registry.remove(4101, change=Change("tenant remove", actor="carol"))
    with pytest.raises(UnknownTenantError):
        registry.get(4101)
    with registry.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(flags_table)).scalar_one() == 0
    history = registry.history(4101)
    assert [(e.command, e.actor) for e in reversed(history)] == [
        ("tenant add", "alice"),
        ("test", "tester"),
        ("sensor", "dagster"),
        ("tenant update-credentials", "bob"),
        ("test", "tester"),
        ("test", "tester"),
        ("tenant remove", "carol"),
    ]
    details = " | ".join(e.detail for e in history)
    assert "client id cid.acme → cid.acme2" in details and "disabled: paused by ops" in details
    assert CANARY_SECRET not in details and "cs1.new-secret" not in details
    assert b"cs1.new-secret" not in (local_env / "registry.db").read_bytes()


def test_rotation_re_encrypts_under_the_new_key_so_the_old_one_can_go(local_env: Path) -> None:
    old, new = generate_key(), generate_key()
    first = _registry(local_env, [old])
    first.add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE)
    first.add(4202, "Beta", "cid.beta", SecretStr("cs1.beta"), change=CHANGE)
    report = _registry(local_env, [new, old]).rotate_keys(change=Change("keys rotate", actor="ops"))
    assert (report.rotated, report.key_id, report.previous_key_ids) == (2, key_id(new), {key_id(old): 2})
    only_new = _registry(local_env, [new])
    assert only_new.credentials(4101).client_secret.get_secret_value() == CANARY_SECRET
    assert only_new.credentials(4202).client_secret.get_secret_value() == "cs1.beta"
    assert only_new.secret_key_id(4101) == key_id(new)
    assert only_new.history()[0].detail == f"2 client secret(s) re-encrypted under key {key_id(new)}"


def test_rotation_without_the_old_key_names_the_tenant_and_rewrites_nothing(local_env: Path) -> None:
    old, new = generate_key(), generate_key()
    _registry(local_env, [old]).add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE)
    before = (local_env / "registry.db").read_bytes()
    with pytest.raises(SecretKeyError, match="tenant 4101.*ST_PIPELINE_SECRET_KEYS") as raised:
        _registry(local_env, [new]).rotate_keys(change=CHANGE)
    assert new not in str(raised.value) and old not in str(raised.value)
    assert (local_env / "registry.db").read_bytes() == before


def test_wrong_key_is_a_clear_error_naming_the_tenant(local_env: Path) -> None:
    _registry(local_env).add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE)
    other = generate_key()
    with pytest.raises(SecretKeyError, match="tenant 4101's stored client secret.*ST_PIPELINE_SECRET_KEYS") as raised:
        _registry(local_env, [other]).credentials(4101)
    assert other not in str(raised.value)


def test_invalid_and_missing_keys_are_explained(monkeypatch: pytest.MonkeyPatch, local_env: Path) -> None:
    with pytest.raises(SecretKeyError, match=r"invalid key \(#1\): not a Fernet key") as raised:
        SecretBox(["not-a-key-CANARY"])
    assert "CANARY" not in str(raised.value)
    monkeypatch.delenv("ST_PIPELINE_SECRET_KEYS")
    registry = TenantRegistry.open(load_settings())
    with pytest.raises(SecretKeyError, match="st-pipeline keys generate"):
        registry.add(1, "x", "cid.x", SecretStr("cs1.x"), change=CHANGE)
    registry.close()


def test_unknown_tenant(local_env: Path) -> None:
    with pytest.raises(UnknownTenantError, match="st-pipeline tenant list"):
        _registry(local_env).credentials(1)


def test_add_tenant_verifies_then_stores(local_env: Path, api_env: Simulator) -> None:
    registry = _registry(local_env)
    tenant = add_tenant(
        registry,
        load_settings().api(),
        tenant_id=TENANT_A.tenant_id,
        name="Tenant A",
        client_id=TENANT_A.client_id,
        client_secret=SecretStr(TENANT_A.client_secret),
        change=CHANGE,
    )
    assert tenant.tenant_id == TENANT_A.tenant_id and tenant.enabled
    assert registry.credentials(TENANT_A.tenant_id).client_id == TENANT_A.client_id


def test_wrong_secret_stores_nothing(local_env: Path, api_env: Simulator) -> None:
    registry = _registry(local_env)
    with pytest.raises(InvalidClientError, match="update-credentials"):
        add_tenant(
            registry,
            load_settings().api(),
            tenant_id=TENANT_A.tenant_id,
            name="Tenant A",
            client_id=TENANT_A.client_id,
            client_secret=SecretStr("cs1.wrong"),
            change=CHANGE,
        )
    assert registry.list() == [] and registry.history() == []


def test_wrong_new_credentials_change_nothing(local_env: Path, api_env: Simulator) -> None:
    registry = _registry(local_env)
    registry.add(TENANT_A.tenant_id, "Tenant A", TENANT_A.client_id, SecretStr(TENANT_A.client_secret), change=CHANGE)
    with registry.engine.connect() as conn:
        before = conn.execute(sa.select(tenants_table)).all()
    with pytest.raises(InvalidClientError):
        update_credentials(
            registry,
            load_settings().api(),
            tenant_id=TENANT_A.tenant_id,
            client_secret=SecretStr("cs1.wrong"),
            change=CHANGE,
        )
    with registry.engine.connect() as conn:
        assert conn.execute(sa.select(tenants_table)).all() == before
    assert len(registry.history()) == 1


def test_wrong_tenant_id_stores_nothing(local_env: Path, api_env: Simulator) -> None:
    registry = _registry(local_env)
    with pytest.raises(ServiceTitanError, match="tenant id matches"):
        add_tenant(
            registry,
            load_settings().api(),
            tenant_id=777,
            name="typo",
            client_id=TENANT_A.client_id,
            client_secret=SecretStr(TENANT_A.client_secret),
            change=CHANGE,
        )
    assert registry.list() == []


# -- time zones ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["America/Los_Angeles", "Europe/Berlin", "UTC", "Asia/Kolkata"])
def test_iana_time_zones_are_accepted(name: str) -> None:
    assert validate_time_zone(name) == name
    assert validate_time_zone(f"  {name}\n") == name  # surrounding whitespace dropped, as for names
    assert name in time_zone_names()


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("localtime", "got 'localtime'"),  # a file of the system's zone directory, not an IANA zone
        ("PST", "got 'PST'"),
        ("", "got an empty value"),
        ("   ", "got an empty value"),
        ("../etc", "got '../etc'"),
        ("/etc/localtime", "got '/etc/localtime'"),
        ("America/Nowhere", "got 'America/Nowhere'"),
        ("Factory", "got 'Factory'"),
        ("Europe/Berlin\x1b[2J", "got 'Europe/Berlin\\\\x1b[2J'"),
        ("america/los_angeles", "got 'america/los_angeles' (did you mean America/Los_Angeles?)"),
    ],
)
def test_anything_else_is_refused_naming_the_value_and_what_to_give(name: str, shown: str) -> None:
    with pytest.raises(InvalidTenantInput) as refused:
        validate_time_zone(name)
    assert str(refused.value) == (
        f"time zone must be an IANA time zone name such as America/Los_Angeles, Europe/Berlin or UTC, {shown}; "
        "`st-pipeline tenant time-zones [TEXT]` lists them"
    )


def test_a_time_zone_is_set_at_add_then_changed_and_unset_each_with_its_audit_entry(local_env: Path) -> None:
    registry = _registry(local_env)
    added = registry.add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE, time_zone="Europe/Berlin")
    assert added.time_zone == "Europe/Berlin" and registry.get(4101).time_zone == "Europe/Berlin"
    plain = registry.add(4102, "Plain", "cid.plain", SecretStr(CANARY_SECRET), change=CHANGE)
    assert plain.time_zone is None

    changed = registry.set_time_zone(4101, "America/Los_Angeles", change=Change("tenant set-time-zone", "alice"))
    assert changed.time_zone == "America/Los_Angeles" and changed.updated_at >= added.updated_at
    assert registry.get(4101) == changed
    first = registry.set_time_zone(4102, "UTC", change=CHANGE)
    assert first.time_zone == "UTC"
    unset = registry.set_time_zone(4101, None, change=Change("tenant set-time-zone", "bob"))
    assert unset.time_zone is None and registry.get(4101).time_zone is None
    assert registry.get(4102).time_zone == "UTC"  # the other tenant's zone is its own

    assert [(e.command, e.actor, e.detail) for e in reversed(registry.history(4101))] == [
        ("test", "tester", "registered 'Acme' with client id cid.acme, time zone Europe/Berlin"),
        ("tenant set-time-zone", "alice", "time zone America/Los_Angeles (was Europe/Berlin)"),
        ("tenant set-time-zone", "bob", "time zone unset, days are UTC (was America/Los_Angeles)"),
    ]
    assert [e.detail for e in reversed(registry.history(4102))] == [
        "registered 'Plain' with client id cid.plain, time zone not set (days are UTC)",
        "time zone UTC (was not set)",
    ]


def test_setting_the_zone_a_tenant_has_changes_nothing(local_env: Path) -> None:
    registry = _registry(local_env)
    registry.add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE, time_zone="Europe/Berlin")
    before, history = registry.get(4101), registry.history()
    assert registry.set_time_zone(4101, "Europe/Berlin", change=CHANGE) == before
    assert registry.history() == history


@pytest.mark.parametrize("zone", ["PST", "localtime", "", "../etc", "America/Nowhere"])
def test_a_bad_time_zone_is_refused_and_stores_nothing(local_env: Path, zone: str) -> None:
    registry = _registry(local_env)
    with pytest.raises(InvalidTenantInput, match=f"time zone must be an IANA time zone name.*got '?{zone or 'an'}"):
        registry.add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE, time_zone=zone)
    assert registry.list() == [] and registry.history() == []

    registry.add(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET), change=CHANGE, time_zone="Europe/Berlin")
    with registry.engine.connect() as conn:
        before = conn.execute(sa.select(tenants_table)).all()
    with pytest.raises(InvalidTenantInput, match="such as America/Los_Angeles"):
        registry.set_time_zone(4101, zone, change=CHANGE)
    with registry.engine.connect() as conn:
        assert conn.execute(sa.select(tenants_table)).all() == before
    assert len(registry.history()) == 1


def test_the_time_zone_of_an_unknown_tenant_is_refused(local_env: Path) -> None:
    with pytest.raises(UnknownTenantError, match="tenant 4101 is not registered"):
        _registry(local_env).set_time_zone(4101, "UTC", change=CHANGE)


def test_add_tenant_checks_the_time_zone_before_asking_servicetitan(
    local_env: Path, api_env: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = _registry(local_env)
    verified: list[object] = []
    real_verify = onboarding.verify_credentials

    def counted(settings: ApiSettings, credentials: TenantCredentials) -> None:
        verified.append(credentials.tenant_id)
        real_verify(settings, credentials)

    monkeypatch.setattr(onboarding, "verify_credentials", counted)
    with pytest.raises(InvalidTenantInput, match="got 'US/Nowhere'"):
        add_tenant(
            registry,
            load_settings().api(),
            tenant_id=TENANT_A.tenant_id,
            name="Tenant A",
            client_id=TENANT_A.client_id,
            client_secret=SecretStr(TENANT_A.client_secret),
            change=CHANGE,
            time_zone="US/Nowhere",
        )
    assert verified == [] and registry.list() == [] and registry.history() == []
    tenant = add_tenant(
        registry,
        load_settings().api(),
        tenant_id=TENANT_A.tenant_id,
        name="Tenant A",
        client_id=TENANT_A.client_id,
        client_secret=SecretStr(TENANT_A.client_secret),
        change=CHANGE,
        time_zone="America/Chicago",
    )
    assert verified == [TENANT_A.tenant_id]
    assert tenant.time_zone == "America/Chicago" == registry.get(TENANT_A.tenant_id).time_zone
