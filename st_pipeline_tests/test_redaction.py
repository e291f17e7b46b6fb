"""What ``redact`` removes, and what it leaves readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from st_pipeline.redaction import REDACTED, redact, register_secret
from st_pipeline.simulator import SimulatedTenant
from st_pipeline_tests.support import register_tenants


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        ("Authorization: Bearer abc.def-ghi rejected", "abc.def-ghi", "Authorization: Bearer [redacted]"),
        ("{'authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz", "authorization"),
        ("got 401 for bearer tok_1234567", "tok_1234567", "bearer [redacted]"),
        ("grant_type=client_credentials&client_secret=cs1.abc&client_id=cid.x", "cs1.abc", "client_id=cid.x"),
        ('{"clientSecret": "cs1.abc def", "password": "p4ss"}', "p4ss", '"clientSecret": "[redacted]"'),
        ("password=hunter22; retry", "hunter22", "retry"),
        ("ST_PIPELINE_SECRET_KEYS=abcdEFGH1234", "abcdEFGH1234", "ST_PIPELINE_SECRET_KEYS=[redacted]"),
        ("postgresql://etl:pw-9x@db:5432/wh failed", "pw-9x", "postgresql://etl:[redacted]@db:5432/wh"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl seen", "eyJhbGciOiJIUzI1NiJ9", "jwt [redacted] seen"),
    ],
)
def test_credential_shapes_are_redacted(text: str, gone: str, kept: str) -> None:
    result = redact(text)
    assert gone not in result
    assert kept in result
    assert redact(result) == result


def test_fernet_tokens_and_keys_are_redacted() -> None:
    key = Fernet.generate_key().decode()
    token = Fernet(key).encrypt(b"cs1.secret").decode()
    result = redact(f"decrypt {token} with {key} failed")
    assert token not in result and key not in result
    assert result == f"decrypt {REDACTED} with {REDACTED} failed"


def test_given_and_registered_secrets_are_redacted_with_their_url_encoding() -> None:
    register_secret("reg/istered+secret 1")
    register_secret(SecretStr("pydantic-held-secret"))
    register_secret(None)
    register_secret("")
    text = "a=reg%2Fistered%2Bsecret+1 b=reg/istered+secret 1 c=pydantic-held-secret d=given-secret"
    result = redact(text, ["given-secret"])
    assert result == f"a={REDACTED} b={REDACTED} c={REDACTED} d={REDACTED}"


def test_ordinary_text_is_untouched() -> None:
    text = (
        "Run 5e1c2f0a-0f6c-4a7e-9b51-52e2c1d7e0aa of servicetitan/raw/crm/customers failed for tenant 4101: "
        "HTTP 503 after 8 attempts; password reset link http://127.0.0.1:3000/runs/5e1c2f0a"
    )
    assert redact(text) == text
    assert redact("") == ""


# Canaries of this test only; their shapes alone (no "secret=" before them) would not be redacted.
LOADED_SECRET = "cs1.LOADED-CANARY-3b91d4e7"
LOADED_APP_KEY = "ak1.LOADED-CANARY-app-8c2f"
LOADED_TENANT = SimulatedTenant(tenant_id=7707, client_id="cid.loaded-canary", client_secret=LOADED_SECRET)

# Run in a fresh interpreter: the process-wide set of registered secrets starts empty there, so
# only what loading the configuration and the tenant registers can redact the canaries.
_PRODUCTION_LOAD = """
import json, sys
from datetime import UTC, datetime

from st_pipeline.redaction import redact, registered_secret_count

tenant_id, text = int(sys.argv[1]), sys.argv[2]
out = {"registered_before": registered_secret_count(), "log_before": redact(text)}

# As a run loads them: the deployment's settings from the environment, the tenant's client from
# the encrypted registry.
from st_pipeline.settings import load_settings
from st_pipeline.tenants.registry import TenantRegistry

settings = load_settings()
registry = TenantRegistry.open(settings)
credentials = registry.credentials(tenant_id)
registry.close()
out["app_key"] = settings.servicetitan_app_key.get_secret_value()
out["client_secret"] = credentials.client_secret.get_secret_value()

# A run's log line (tenant sync errors are logged through redact) and an alert as channels send it.
from st_pipeline.alerts.model import Alert, AlertMessage

out["log"] = redact(text)
alert = Alert("run_failure:tenant=7707", "run_failure", title=text, reason=text, tenant_id=tenant_id)
out["alert"] = AlertMessage.opened(alert, datetime.now(UTC)).redacted().to_dict()
print(json.dumps(out), flush=True)

# The command line's last line of defence: an unexpected error, reported as one redacted line.
from st_pipeline.cli import main

@main.command("fail-with-text")
def _fail() -> None:
    raise RuntimeError(text)

main.main(["fail-with-text"])
"""


def test_secrets_loaded_the_production_way_are_redacted_from_logs_alerts_and_errors(local_env: Path) -> None:
    register_tenants(None, LOADED_TENANT)  # encrypted with the environment's key, as `tenant add` does
    text = f"upstream echoed {LOADED_SECRET} and {LOADED_APP_KEY} back"
    expected = f"upstream echoed {REDACTED} and {REDACTED} back"
    env = {**os.environ, "SERVICETITAN_APP_KEY": LOADED_APP_KEY}
    done = subprocess.run(
        [sys.executable, "-c", _PRODUCTION_LOAD, str(LOADED_TENANT.tenant_id), text],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[0])
    # Nothing was registered before loading, and nothing but the registered values removes them.
    assert out["registered_before"] == 0 and out["log_before"] == text
    assert (out["client_secret"], out["app_key"]) == (LOADED_SECRET, LOADED_APP_KEY)
    assert out["log"] == expected
    assert (out["alert"]["title"], out["alert"]["reason"]) == (expected, expected)
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: unexpected RuntimeError: {expected} (run with --traceback for details)"
    )
    assert LOADED_SECRET not in done.stderr and LOADED_APP_KEY not in done.stderr
