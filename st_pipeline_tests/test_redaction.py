"""What ``redact`` removes, and what it leaves readable."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from st_pipeline.redaction import REDACTED, redact, register_secret


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
