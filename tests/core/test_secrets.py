"""zonal_core.secrets: masking and redaction never leak, never raise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonal_core.secrets import MASK, mask, mask_url, redact


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:secret@db:5432/appdb", "postgresql://app:***@db:5432/appdb"),
        ("postgresql+psycopg://app:secret@db/appdb", "postgresql+psycopg://app:***@db/appdb"),
        ("postgres://app:s@cr@t@db/x", "postgres://app:***@db/x"),
        ("postgresql://app:p%40ss@[::1]:5432/x", "postgresql://app:***@[::1]:5432/x"),
        ("postgresql://:secret@db/x", "postgresql://:***@db/x"),
        ("postgresql://app@db/appdb", "postgresql://app@db/appdb"),
        ("postgresql://db:5432/appdb", "postgresql://db:5432/appdb"),
        (
            "postgresql://app@db/x?sslmode=require&password=secret",
            "postgresql://app@db/x?sslmode=require&password=***",
        ),
        (
            "postgresql://app@db/x?password=secret&sslmode=require",
            "postgresql://app@db/x?password=***&sslmode=require",
        ),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected


def test_mask_url_is_idempotent() -> None:
    once = mask_url("postgresql://app:secret@db/x")
    assert mask_url(once) == once


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connect to app:secret@10.0.1.5:6432 failed", "secret"),
        ("endpoint 'app:secret@h:1' is bad", "secret"),
        ("host=db user=app password=secret dbname=x", "secret"),
        ("host=db password='sec ret' dbname=x", "sec ret"),
        ("PASSWORD = secret", "secret"),
        ("sslpassword=secret", "secret"),
        ("a postgresql://u:secret@h/db and b:secret2@h2", "secret"),
    ],
)
def test_mask_free_text(text: str, secret: str) -> None:
    out = mask(text)
    assert secret not in out
    assert MASK in out


def test_mask_leaves_harmless_text_alone() -> None:
    text = "zones['a'][1]: port must be from 1 to 65535; see [::1]:5432 and 10.0.1.5:6432"
    assert mask(text) == text
    assert mask("app@db:5432") == "app@db:5432"  # a user, no password


def test_redact_known_secrets_and_their_url_form() -> None:
    text = "auth failed: s3cr3t/x and p%40ss and p@ss"
    out = redact(text, ["s3cr3t", "p@ss", None, ""])
    assert "s3cr3t" not in out
    assert "p@ss" not in out
    assert "p%40ss" not in out
    assert out.count(MASK) == 3


def test_redact_longest_first() -> None:
    # "ab" inside "abc": replacing "ab" first would leave "c" behind.
    assert redact("x abc y", ["ab", "abc"]) == f"x {MASK} y"


_NO_STAR = st.text(alphabet=st.characters(blacklist_characters="*"))


@given(st.text(), st.lists(_NO_STAR, max_size=3))
def test_never_raises_and_never_leaks(text: str, secrets: list[str]) -> None:
    assert isinstance(mask(text), str)
    assert isinstance(mask_url(text), str)
    out = redact(text, secrets)
    for secret in secrets:
        if secret:
            assert secret not in out


def test_redact_lone_surrogates() -> None:
    # os.environ decodes undecodable bytes to lone surrogates.
    assert redact("x\udcff y", ["\udcff"]) == f"x{MASK} y"
