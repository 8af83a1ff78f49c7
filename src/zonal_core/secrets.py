"""Keep passwords out of every message, repr and log line.

Three small helpers, used wherever text may carry a credential:

- :func:`mask_url` for one connection URL,
- :func:`mask` for free text (URLs, ``user:pass@host``, ``password=...`` pairs),
- :func:`redact` for text in which *known* secrets must not appear, whatever their
  form (a password echoed by a driver error, say).

None of them raises, whatever the input.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["MASK", "mask", "mask_url", "redact"]

MASK = "***"
"""What a secret is replaced with."""

# Optional opening punctuation, then an optional "scheme://": what comes before the
# userinfo of a token.
_LEAD = re.compile(r"[\"'(\[<{=,]*(?:[A-Za-z][A-Za-z0-9+.\-]*://)?")
# password=... in libpq conninfo strings and URL query strings; quoted or not.
_KEYVALUE = re.compile(
    r"(?P<head>\b(?:ssl)?password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'?|[^\s&]+)",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"\S+")


def _mask_token(token: str) -> str:
    # The password runs from the first ":" of the userinfo to the *last* "@" of the
    # token, so an unencoded "@" inside it is masked too (over-masking is the safe
    # failure).
    at = token.rfind("@")
    if at < 0:
        return token
    lead = _LEAD.match(token)
    start = lead.end() if lead else 0
    if start > at:
        return token
    colon = token.find(":", start, at)
    if colon < 0 or "/" in token[start:colon]:
        return token
    return f"{token[: colon + 1]}{MASK}{token[at:]}"


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by :data:`MASK`.

    >>> mask_url("postgresql://app:secret@db:5432/appdb")
    'postgresql://app:***@db:5432/appdb'
    >>> mask_url("postgresql://app@db/appdb?password=secret&sslmode=require")
    'postgresql://app@db/appdb?password=***&sslmode=require'
    >>> mask_url("postgresql://db/appdb")
    'postgresql://db/appdb'
    """
    return mask(url)


def mask(text: str) -> str:
    """Mask every password-looking part of free text.

    Covers URLs (``postgresql://u:p@h``), zonal's endpoint form ``u:p@h:port`` and
    ``password=...`` pairs (libpq conninfo, query strings). Best effort by shape;
    where the secret is known, :func:`redact` is exact.

    >>> mask("connect to app:secret@10.0.1.5:6432 failed")
    'connect to app:***@10.0.1.5:6432 failed'
    >>> mask("host=db user=app password='s e c' dbname=x")
    'host=db user=app password=*** dbname=x'
    """
    out = _KEYVALUE.sub(lambda m: f"{m['head']}{MASK}", str(text))
    return _TOKEN.sub(lambda m: _mask_token(m.group(0)), out)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret in ``text`` by :data:`MASK`.

    The percent-encoded form of a secret is replaced too (it is how a password
    appears inside a URL). Empty and ``None`` secrets are skipped; longer secrets go
    first so that one secret inside another cannot leave a tail behind.

    >>> redact("auth failed for app/s3cret", ["s3cret", None])
    'auth failed for app/***'
    """
    out = str(text)
    forms: set[str] = set()
    for secret in secrets:
        if not isinstance(secret, str) or not secret:
            continue
        forms.add(secret)
        # Lone surrogates (env values decoded with surrogateescape) cannot be
        # percent-encoded, and no URL can hold them anyway.
        with contextlib.suppress(UnicodeEncodeError):
            forms.add(quote(secret, safe=""))
    for form in sorted(forms, key=len, reverse=True):
        out = out.replace(form, MASK)
    return out
