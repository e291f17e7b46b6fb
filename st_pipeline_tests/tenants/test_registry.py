"""Encrypted credential store and tenant onboarding against the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from st_pipeline.servicetitan.errors import InvalidClientError, ServiceTitanError
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import Simulator
from st_pipeline.tenants.crypto import SecretBox, SecretKeyError, generate_key
from st_pipeline.tenants.onboarding import add_tenant
from st_pipeline.tenants.registry import TenantRegistry, UnknownTenantError
from st_pipeline_tests.conftest import CANARY_SECRET, TENANT_A


def _registry(home: Path, keys: list[str] | None = None) -> TenantRegistry:
    return TenantRegistry.from_url(f"sqlite:///{home / 'registry.db'}", SecretBox(keys or [generate_key()]))


def test_secret_is_encrypted_at_rest_and_decrypts(local_env: Path) -> None:
    registry = _registry(local_env)
    registry.save(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET))
    assert CANARY_SECRET.encode() not in (local_env / "registry.db").read_bytes()
    assert registry.credentials(4101).client_secret.get_secret_value() == CANARY_SECRET
    assert [t.tenant_id for t in registry.list()] == [4101]
    assert CANARY_SECRET not in repr(registry.list()) + repr(registry.credentials(4101))


def test_key_rotation_keeps_old_secrets_readable(local_env: Path) -> None:
    old, new = generate_key(), generate_key()
    _registry(local_env, [old]).save(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET))
    rotated = _registry(local_env, [new, old])
    assert rotated.credentials(4101).client_secret.get_secret_value() == CANARY_SECRET


def test_wrong_key_is_a_clear_error_without_the_key(local_env: Path) -> None:
    _registry(local_env).save(4101, "Acme", "cid.acme", SecretStr(CANARY_SECRET))
    other = generate_key()
    with pytest.raises(SecretKeyError, match="ST_PIPELINE_SECRET_KEYS") as raised:
        _registry(local_env, [other]).credentials(4101)
    assert other not in str(raised.value)


def test_invalid_key_and_missing_key_are_explained(monkeypatch: pytest.MonkeyPatch, local_env: Path) -> None:
    with pytest.raises(SecretKeyError, match="not a valid Fernet key") as raised:
        SecretBox(["not-a-key-CANARY"])
    assert "CANARY" not in str(raised.value)
    monkeypatch.delenv("ST_PIPELINE_SECRET_KEYS")
    with pytest.raises(SecretKeyError, match="st-pipeline secret-key"):
        SecretBox.from_env()


def test_unknown_tenant(local_env: Path) -> None:
    with pytest.raises(UnknownTenantError, match="st-pipeline tenant add"):
        _registry(local_env).credentials(1)


def test_add_tenant_verifies_then_stores(local_env: Path, api_env: Simulator) -> None:
    registry = _registry(local_env)
    tenant = add_tenant(
        registry,
        ApiSettings.resolve(),
        tenant_id=TENANT_A.tenant_id,
        name="Tenant A",
        client_id=TENANT_A.client_id,
        client_secret=SecretStr(TENANT_A.client_secret),
    )
    assert tenant.tenant_id == TENANT_A.tenant_id and tenant.enabled
    assert registry.credentials(TENANT_A.tenant_id).client_id == TENANT_A.client_id


def test_wrong_secret_stores_nothing(local_env: Path, api_env: Simulator) -> None:
    registry = _registry(local_env)
    with pytest.raises(InvalidClientError, match="tenant add"):
        add_tenant(
            registry,
            ApiSettings.resolve(),
            tenant_id=TENANT_A.tenant_id,
            name="Tenant A",
            client_id=TENANT_A.client_id,
            client_secret=SecretStr("cs1.wrong"),
        )
    assert registry.list() == []


def test_wrong_tenant_id_stores_nothing(local_env: Path, api_env: Simulator) -> None:
    registry = _registry(local_env)
    with pytest.raises(ServiceTitanError, match="tenant id matches"):
        add_tenant(
            registry,
            ApiSettings.resolve(),
            tenant_id=777,
            name="typo",
            client_id=TENANT_A.client_id,
            client_secret=SecretStr(TENANT_A.client_secret),
        )
    assert registry.list() == []
