"""The session-state rule for PgBouncer transaction mode.

Behind PgBouncer in transaction mode, a client owns a server connection only for the
length of one transaction. Anything a statement leaves on the *session* (a ``SET``,
a role, a ``LISTEN``, a prepared statement, a held cursor, a session advisory lock, a
temporary table) is either lost at the next transaction or leaks to whichever client
gets that server connection next.

:func:`classify` spots such statements before they run; :func:`check` applies the
``session_state`` policy (raise, warn or allow). Pure stdlib, no database. It runs on
every statement (SQLAlchemy's ``before_cursor_execute``), so ordinary statements pass
a cheap pre-filter and only candidates are tokenized.

>>> classify("SELECT * FROM users WHERE id = %(id)s") is None
True
>>> classify("SET statement_timeout = '5s'").safe_form
"SET LOCAL statement_timeout = '5s'"
>>> classify("SELECT pg_advisory_xact_lock(42)") is None
True
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple

from zonal_core.errors import SessionStateError, ZonalConfigError

__all__ = [
    "KINDS",
    "KNOWN_SAFE",
    "TRACKED_PARAMETERS",
    "SessionStateFinding",
    "SessionStateWarning",
    "check",
    "classify",
]

_LOG = logging.getLogger(__name__)

TRACKED_PARAMETERS = frozenset(
    {"client_encoding", "datestyle", "timezone", "standard_conforming_strings", "application_name"}
)
"""Parameters PgBouncer tracks and restores per client: a plain ``SET`` of them is safe.

Names are lower case (PostgreSQL parameter names are case-insensitive).
"""

KINDS = frozenset(
    {
        "set",
        "set_role",
        "session_authorization",
        "listen",
        "prepare",
        "deallocate",
        "declare_with_hold",
        "advisory_lock",
        "temp_table",
        "temp_object",
    }
)
"""Every :attr:`SessionStateFinding.kind`.

``set`` covers ``SET``, ``RESET`` and ``set_config(..., false)`` of untracked
parameters; ``temp_object`` covers temporary views and sequences.
"""

_MAX_STATEMENT = 80
_DIRECT = "a direct (non-PgBouncer) connection"


@dataclass(frozen=True, slots=True)
class SessionStateFinding:
    """A statement that keeps session state PgBouncer transaction mode loses or leaks.

    ``kind`` is one of :data:`KINDS`; ``statement`` is the offending statement,
    comments dropped, whitespace collapsed and cut at about 80 characters (it is the
    SQL text only, never the bound parameter values); ``safe_form`` is what to write
    instead; ``message`` is a full sentence naming both.
    """

    kind: str
    statement: str
    safe_form: str
    message: str


class SessionStateWarning(UserWarning):
    """Emitted by :func:`check` under ``session_state="warn"``.

    ``finding`` is the :class:`SessionStateFinding` (None if built by hand).
    """

    def __init__(self, message: str, finding: SessionStateFinding | None = None) -> None:
        super().__init__(message)
        self.finding = finding


# --------------------------------------------------------------------------- pre-filter

# Statements that are session state only when they *start* with these words, and
# the comments that could hide such a start. A prefix test is enough: a false
# candidate ("settings ...") merely takes the slow path.
_SLOW_STARTS = ("set", "reset", "listen", "prepare", "deallocate", "declare", "create", "--", "/*")
_LEADING = " \t\r\n\f\v("


# SELECT ... INTO TEMP: a column such as "attempts" in a long INSERT INTO ... VALUES
# must not send every bulk insert down the slow path. A comment anywhere sends it
# there anyway, since one could sit between INTO and TEMP. (No leading \b: it
# would cost the regex its fast literal scan.)
_INTO_TEMP = re.compile(r"into\s+(?:(?:local|global)\s+)?temp")


KNOWN_SAFE: set[str] = set()
"""Statements the pre-filter passed: safe whatever the policy (a set's add and clear
are atomic under the GIL, and a lost entry only costs the pre-filter again). A
caller on a hot path may test ``sql in KNOWN_SAFE`` before calling :func:`check`."""
KNOWN_SAFE_MAX = 4096


def _maybe_into_temp(low: str) -> bool:
    return "/*" in low or "--" in low or _INTO_TEMP.search(low) is not None


def classify(sql: str) -> SessionStateFinding | None:
    """Return the first session-state finding in ``sql``, or None if it is safe.

    Each ``;``-separated statement is looked at; keywords inside string literals
    (also dollar-quoted), quoted identifiers and comments do not count. Never raises.

    >>> classify("/* SET role */ SELECT 'pg_advisory_lock(1)' AS \\"listen\\"") is None
    True
    >>> classify("SELECT 1; LISTEN jobs").kind
    'listen'
    """
    # Hot path: a statement found safe before (an ORM's statements repeat, as the
    # same string) leaves after one set lookup; ordinary statements after one lower()
    # and a few substring searches. Anything that could matter (a start keyword, a
    # function call by name, SELECT INTO TEMP, a second statement, a leading comment)
    # goes on.
    if sql in KNOWN_SAFE:
        return None
    low = sql.lower()
    if (
        "advisory" not in low
        and "set_config" not in low
        and ";" not in low
        and ("temp" not in low or "into" not in low or not _maybe_into_temp(low))
        and not low.lstrip(_LEADING).startswith(_SLOW_STARTS)
    ):
        if len(KNOWN_SAFE) >= KNOWN_SAFE_MAX:
            KNOWN_SAFE.clear()  # (bounded: an application that builds its SQL anew each time)
        KNOWN_SAFE.add(sql)
        return None
    try:
        return _classify_slow(sql)
    except Exception:  # pragma: no cover - a bug here must never break a query
        _LOG.debug("session-state classification failed", exc_info=True)
        return None


def check(
    sql: str,
    policy: Literal["error", "warn", "allow"],
    *,
    logger: logging.Logger = _LOG,
) -> None:
    """Apply the ``session_state`` policy to ``sql``.

    ``"error"`` raises :class:`~zonal_core.errors.SessionStateError` (with
    ``statement`` and ``safe_form``); ``"warn"`` emits a :class:`SessionStateWarning`
    and logs the message at WARNING on ``logger``; ``"allow"`` does nothing and does
    not even classify. Any other policy is a :class:`~zonal_core.errors.ZonalConfigError`.

    >>> check("SET LOCAL statement_timeout = '5s'", "error")
    >>> check("LISTEN jobs", "error")
    Traceback (most recent call last):
    ...
    zonal_core.errors.SessionStateError: LISTEN jobs needs a session of its own; ...
    """
    if policy == "allow":
        return
    if policy not in ("error", "warn"):
        raise ZonalConfigError(
            "session_state",
            f"must be 'error', 'warn' or 'allow', not {policy!r}",
            fix="session_state='error'",
        )
    finding = classify(sql)
    if finding is None:
        return
    if policy == "error":
        raise SessionStateError(
            finding.message, statement=finding.statement, safe_form=finding.safe_form
        )
    logger.warning("%s", finding.message)
    warnings.warn(SessionStateWarning(finding.message, finding), stacklevel=2)


# --------------------------------------------------------------------------- tokenizer

_W = "w"  # word: unquoted identifier or keyword, lower-cased
_Q = "q"  # quoted identifier, unescaped, case kept
_S = "s"  # string literal (also E'', dollar-quoted), content
_O = "o"  # anything else: one character of punctuation, a number


class _Tok(NamedTuple):  # a tuple: cheapest to build, one per token
    kind: str
    text: str
    start: int
    end: int


_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<line>--[^\n]*)
    | (?P<block>/\*)
    | (?P<estr>[eE]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?)
    | (?P<str>'[^']*(?:''[^']*)*'?)
    | (?P<qid>"[^"]*(?:""[^"]*)*"?)
    | (?P<dollar>\$(?:[^\W\d]\w*)?\$)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
    | (?P<op>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_BLOCK_EDGE = re.compile(r"/\*|\*/")


def _block_end(sql: str, pos: int) -> int:
    # PostgreSQL block comments nest; an unterminated one runs to the end.
    depth = 1
    for m in _BLOCK_EDGE.finditer(sql, pos):
        if m.group() == "/*":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
    return len(sql)


def _unquote(body: str, quote: str) -> str:
    # An unterminated literal runs to the end of the text.
    inner = body[1:-1] if len(body) >= 2 and body.endswith(quote) else body[1:]
    return inner.replace(quote * 2, quote)


def _statements(sql: str) -> list[list[_Tok]]:
    """Split ``sql`` into statements of significant tokens (no space, no comments)."""
    out: list[list[_Tok]] = []
    cur: list[_Tok] = []
    depth = 0
    pos = 0
    n = len(sql)
    while pos < n:
        m = _TOKEN.match(sql, pos)
        if m is None:  # pragma: no cover - "op" matches any character
            break
        kind = m.lastgroup
        end = m.end()
        text = m.group()
        if kind in ("ws", "line"):
            pass
        elif kind == "block":
            end = _block_end(sql, end)
        elif kind == "word":
            cur.append(_Tok(_W, text.lower(), pos, end))
        elif kind == "str":
            cur.append(_Tok(_S, _unquote(text, "'"), pos, end))
        elif kind == "estr":
            cur.append(_Tok(_S, _unquote(text[1:], "'"), pos, end))
        elif kind == "qid":
            cur.append(_Tok(_Q, _unquote(text, '"'), pos, end))
        elif kind == "dollar":
            # $tag$ ... $tag$; unterminated runs to the end of the text.
            close = sql.find(text, end)
            body_end, end = (n, n) if close < 0 else (close, close + len(text))
            cur.append(_Tok(_S, sql[m.end() : body_end], pos, end))
        elif text == ";" and depth == 0:
            if cur:
                out.append(cur)
            cur = []
        else:
            if text == "(":
                depth += 1
            elif text == ")" and depth > 0:
                depth -= 1
            cur.append(_Tok(_O, text, pos, end))
        pos = end
    if cur:
        out.append(cur)
    return out


def _render(sql: str, toks: list[_Tok], limit: int = _MAX_STATEMENT) -> str:
    """The original text of ``toks``, one space where there was space or a comment."""
    parts: list[str] = []
    prev_end = -1
    size = 0
    for t in toks:
        if prev_end >= 0 and t.start != prev_end:
            parts.append(" ")
        piece = " ".join(sql[t.start : t.end].split()) if t.kind == _S else sql[t.start : t.end]
        parts.append(piece)
        size += len(piece) + 1
        prev_end = t.end
        if size > limit:
            break
    text = "".join(parts)
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _is_word(toks: list[_Tok], i: int, *words: str) -> bool:
    return i < len(toks) and toks[i].kind == _W and toks[i].text in words


def _is_op(toks: list[_Tok], i: int, op: str) -> bool:
    return i < len(toks) and toks[i].kind == _O and toks[i].text == op


def _has_sequence(toks: list[_Tok], *words: str) -> bool:
    k = len(words)
    for i in range(len(toks) - k + 1):
        if all(toks[i + j].kind == _W and toks[i + j].text == words[j] for j in range(k)):
            return True
    return False


# --------------------------------------------------------------------------- rules


def _classify_slow(sql: str) -> SessionStateFinding | None:
    for toks in _statements(sql):
        finding = _classify_statement(sql, toks)
        if finding is not None:
            return finding
    return None


def _classify_statement(sql: str, toks: list[_Tok]) -> SessionStateFinding | None:
    i = 0
    while _is_op(toks, i, "("):
        i += 1
    if i >= len(toks):
        return None
    first = toks[i].text if toks[i].kind == _W else ""
    stmt = _render(sql, toks)
    finding: SessionStateFinding | None = None
    if first == "set":
        finding = _rule_set(sql, toks, i + 1, stmt)
    elif first == "reset":
        finding = _rule_reset(sql, toks, i + 1, stmt)
    elif first == "listen":
        finding = _listen(stmt)
    elif first == "prepare":
        # PREPARE TRANSACTION 'gid' is two-phase commit, not a prepared statement.
        if not (
            _is_word(toks, i + 1, "transaction") and i + 2 < len(toks) and toks[i + 2].kind == _S
        ):
            finding = _prepared(stmt, "prepare")
    elif first == "deallocate":
        finding = _prepared(stmt, "deallocate")
    elif first == "declare":
        finding = _rule_declare(toks, i + 1, stmt)
    elif first == "create":
        finding = _rule_create(toks, i + 1, stmt)
    elif first in ("select", "with"):
        finding = _rule_select_into(toks, stmt)
    if finding is not None:
        return finding
    return _rule_calls(sql, toks, stmt)


def _make(kind: str, stmt: str, safe: str, message: str) -> SessionStateFinding:
    return SessionStateFinding(kind=kind, statement=stmt, safe_form=safe, message=message)


def _set_message(stmt: str, safe: str) -> str:
    return (
        f"{stmt} keeps session state that PgBouncer transaction mode loses or leaks to "
        f"other clients; use {safe} inside a transaction, or set it per role/database "
        "on the server (ALTER ROLE ... SET)"
    )


def _param_name(toks: list[_Tok], i: int) -> tuple[str | None, int]:
    """The (lower-cased, possibly dotted) parameter name at ``i`` and the index after."""
    if i >= len(toks) or toks[i].kind not in (_W, _Q):
        return None, i
    # Multi-word spellings of parameters.
    if _is_word(toks, i, "time") and _is_word(toks, i + 1, "zone"):
        return "timezone", i + 2
    if _is_word(toks, i, "xml") and _is_word(toks, i + 1, "option"):
        return "xmloption", i + 2
    if _is_word(toks, i, "names"):
        return "client_encoding", i + 1
    if _is_word(toks, i, "schema"):
        return "search_path", i + 1
    parts = [toks[i].text.lower()]
    i += 1
    while _is_op(toks, i, ".") and i + 1 < len(toks) and toks[i + 1].kind in (_W, _Q):
        parts.append(toks[i + 1].text.lower())
        i += 2
    return ".".join(parts), i


def _rule_set(sql: str, toks: list[_Tok], i: int, stmt: str) -> SessionStateFinding | None:
    if _is_word(toks, i, "local", "transaction", "constraints"):
        return None  # SET LOCAL ..., SET TRANSACTION ..., SET CONSTRAINTS ...: one transaction
    if _is_word(toks, i, "session"):
        if _is_word(toks, i + 1, "authorization"):
            safe = "SET LOCAL " + _render(sql, toks[i:], 60)
            return _session_authorization(stmt, safe)
        if _is_word(toks, i + 1, "characteristics"):
            j = i + 2
            while _is_word(toks, j, "as", "transaction"):
                j += 1
            safe = "SET TRANSACTION " + _render(sql, toks[j:], 60)
            return _make("set", stmt, safe, _set_message(stmt, safe))
        i += 1
    if _is_word(toks, i, "role"):
        safe = "SET LOCAL " + _render(sql, toks[i:], 60)
        return _make(
            "set_role",
            stmt,
            safe,
            f"{stmt} keeps a session role that PgBouncer transaction mode leaks to other "
            f"clients (or loses); use {safe} inside a transaction, or connect as that role",
        )
    if _is_word(toks, i, "session_authorization"):
        safe = "SET LOCAL " + _render(sql, toks[i:], 60)
        return _session_authorization(stmt, safe)
    name, _ = _param_name(toks, i)
    if name is None or name in TRACKED_PARAMETERS:
        return None
    safe = "SET LOCAL " + _render(sql, toks[i:], 60)
    return _make("set", stmt, safe, _set_message(stmt, safe))


def _session_authorization(stmt: str, safe: str) -> SessionStateFinding:
    return _make(
        "session_authorization",
        stmt,
        safe,
        f"{stmt} keeps a session user that PgBouncer transaction mode leaks to other "
        f"clients (or loses); use {safe} inside a transaction, or connect as that user",
    )


def _rule_reset(sql: str, toks: list[_Tok], i: int, stmt: str) -> SessionStateFinding | None:
    if _is_word(toks, i, "all"):
        safe = "SET LOCAL <parameter> TO DEFAULT"
        return _make(
            "set",
            stmt,
            safe,
            f"{stmt} changes session state of a server connection that PgBouncer "
            f"transaction mode shares with other clients; use {safe} for each parameter "
            "inside a transaction (SET LOCAL needs no reset)",
        )
    if _is_word(toks, i, "role"):
        safe = "SET LOCAL ROLE ..."
        return _make(
            "set_role",
            stmt,
            safe,
            f"{stmt} changes the role of a server connection that PgBouncer transaction "
            f"mode shares with other clients; use {safe} inside a transaction, which "
            "ends with it and needs no reset",
        )
    if _is_word(toks, i, "session") and _is_word(toks, i + 1, "authorization"):
        safe = "SET LOCAL SESSION AUTHORIZATION ..."
        return _make(
            "session_authorization",
            stmt,
            safe,
            f"{stmt} changes the user of a server connection that PgBouncer transaction "
            f"mode shares with other clients; use {safe} inside a transaction, which "
            "ends with it and needs no reset",
        )
    if _is_word(toks, i, "transaction", "session_authorization"):
        return None
    name, _ = _param_name(toks, i)
    if name is None or name in TRACKED_PARAMETERS:
        return None
    safe = f"SET LOCAL {_render(sql, [toks[i]], 40)} TO DEFAULT"
    return _make(
        "set",
        stmt,
        safe,
        f"{stmt} changes session state of a server connection that PgBouncer transaction "
        f"mode shares with other clients; use {safe} inside a transaction (SET LOCAL "
        "needs no reset)",
    )


def _listen(stmt: str) -> SessionStateFinding:
    return _make(
        "listen",
        stmt,
        _DIRECT,
        f"{stmt} needs a session of its own; behind PgBouncer transaction mode the "
        "notifications reach whichever client holds the server connection, or no one; "
        f"use {_DIRECT} for LISTEN",
    )


def _prepared(stmt: str, kind: str) -> SessionStateFinding:
    safe = f"a plain (unprepared) statement, or {_DIRECT}"
    return _make(
        kind,
        stmt,
        safe,
        f"{stmt} works on prepared statements of one server connection, which "
        f"PgBouncer transaction mode hands to other clients between transactions; use "
        f"{safe}",
    )


def _rule_declare(toks: list[_Tok], i: int, stmt: str) -> SessionStateFinding | None:
    # Options sit between the cursor name and FOR; the query after FOR may say WITH.
    j = i
    while j < len(toks) and not _is_word(toks, j, "for"):
        if _is_word(toks, j, "with") and _is_word(toks, j + 1, "hold"):
            safe = "a cursor WITHOUT HOLD, used inside one transaction"
            return _make(
                "declare_with_hold",
                stmt,
                safe,
                f"{stmt} keeps a cursor open after COMMIT on a server connection that "
                f"PgBouncer transaction mode hands to other clients; use {safe}, or "
                f"{_DIRECT}",
            )
        j += 1
    return None


def _temp_table(stmt: str, safe: str) -> SessionStateFinding:
    return _make(
        "temp_table",
        stmt,
        safe,
        f"{stmt} creates a temporary table that outlives the transaction on a server "
        f"connection PgBouncer transaction mode hands to other clients; use {safe} "
        "inside a transaction",
    )


def _rule_create(toks: list[_Tok], i: int, stmt: str) -> SessionStateFinding | None:
    if _is_word(toks, i, "or") and _is_word(toks, i + 1, "replace"):
        i += 2
    temp = False
    if _is_word(toks, i, "global", "local"):
        i += 1
    if _is_word(toks, i, "temp", "temporary"):
        temp = True
        i += 1
    elif _is_word(toks, i, "unlogged"):
        i += 1
    if _is_word(toks, i, "recursive"):  # CREATE TEMP RECURSIVE VIEW
        i += 1
    if not _is_word(toks, i, "table", "view", "sequence"):
        return None
    obj = toks[i].text
    i += 1
    if _is_word(toks, i, "if") and _is_word(toks, i + 1, "not") and _is_word(toks, i + 2, "exists"):
        i += 3
    # A table created in schema pg_temp is a temporary table too.
    if not temp and _is_word(toks, i, "pg_temp") and _is_op(toks, i + 1, "."):
        temp = True
    if not temp:
        return None
    if obj == "table":
        if _has_sequence(toks, "on", "commit", "drop"):
            return None
        return _temp_table(stmt, "CREATE TEMP TABLE ... ON COMMIT DROP")
    safe = f"a regular {obj}, or {_DIRECT}"
    return _make(
        "temp_object",
        stmt,
        safe,
        f"{stmt} creates a temporary {obj} that outlives the transaction on a server "
        f"connection PgBouncer transaction mode hands to other clients; use {safe}",
    )


# Words that may follow INTO TEMP when TEMP is a table's name, not the keyword.
_NOT_A_TABLE = frozenset(
    {
        "from", "where", "group", "having", "window", "order", "limit", "offset", "fetch",
        "for", "union", "intersect", "except", "select", "values", "default", "as", "on",
        "returning", "using", "overriding",
    }
)  # fmt: skip


def _rule_select_into(toks: list[_Tok], stmt: str) -> SessionStateFinding | None:
    last = ""
    for i, t in enumerate(toks):
        if t.kind != _W:
            continue
        if t.text in ("select", "insert", "merge", "copy"):
            last = t.text
        elif t.text == "into" and last == "select":
            j = i + 1
            if _is_word(toks, j, "local", "global"):
                j += 1
            if not _is_word(toks, j, "temp", "temporary"):
                continue
            j += 1
            if _is_word(toks, j, "table"):
                j += 1
            if j < len(toks) and (
                toks[j].kind == _Q or (toks[j].kind == _W and toks[j].text not in _NOT_A_TABLE)
            ):
                return _temp_table(stmt, "CREATE TEMP TABLE ... ON COMMIT DROP AS SELECT ...")
    return None


# Session-level advisory lock functions -> the transaction-level replacement.
_ADVISORY = {
    "pg_advisory_lock": "pg_advisory_xact_lock",
    "pg_advisory_lock_shared": "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock": "pg_try_advisory_xact_lock",
    "pg_try_advisory_lock_shared": "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock": "pg_advisory_xact_lock",
    "pg_advisory_unlock_shared": "pg_advisory_xact_lock_shared",
    "pg_advisory_unlock_all": "pg_advisory_xact_lock",
}


def _rule_calls(sql: str, toks: list[_Tok], stmt: str) -> SessionStateFinding | None:
    for i, t in enumerate(toks):
        if t.kind not in (_W, _Q) or not _is_op(toks, i + 1, "("):
            continue
        name = t.text
        xact = _ADVISORY.get(name)
        if xact is not None:
            if "unlock" in name:
                safe = f"{xact}(...)"
                message = (
                    f"{stmt} releases a session-level advisory lock, which behind "
                    "PgBouncer transaction mode was taken on a server connection other "
                    f"clients share; use {safe} inside a transaction instead, which "
                    "needs no unlock"
                )
            else:
                # Same arguments, transaction-level function.
                args = ", ".join(_render(sql, a, 30) for a in _call_args(toks, i + 2))
                safe = f"{xact}({args})"
                message = (
                    f"{stmt} takes a session-level advisory lock, which stays on the "
                    "server connection after the transaction, held for whichever client "
                    f"gets it next; use {safe} inside a transaction, which releases it "
                    "at COMMIT"
                )
            return _make("advisory_lock", stmt, safe, message)
        if name == "set_config":
            finding = _rule_set_config(sql, toks, i + 2, stmt)
            if finding is not None:
                return finding
    return None


def _call_args(toks: list[_Tok], i: int) -> list[list[_Tok]]:
    """Arguments of a call whose ``(`` is just before ``i``, split at top-level commas."""
    args: list[list[_Tok]] = [[]]
    depth = 0
    for t in toks[i:]:
        if t.kind == _O:
            if t.text == ")" and depth == 0:
                return args
            if t.text == "," and depth == 0:
                args.append([])
                continue
            if t.text in "([":
                depth += 1
            elif t.text in ")]":
                depth -= 1
        args[-1].append(t)
    return args


def _is_false(arg: list[_Tok]) -> bool:
    # Drop a trailing cast (false::boolean, 'off'::bool).
    if len(arg) >= 3 and _is_op(arg, 1, ":") and _is_op(arg, 2, ":"):
        arg = arg[:1]
    if len(arg) != 1:
        return False
    t = arg[0]
    if t.kind == _W:
        return t.text == "false"
    if t.kind == _S:
        v = t.text.strip().lower()
        # PostgreSQL's boolean input accepts unique prefixes of false/no/off.
        return v in ("0", "n", "no", "of", "off") or (v != "" and "false".startswith(v))
    return False


def _rule_set_config(sql: str, toks: list[_Tok], i: int, stmt: str) -> SessionStateFinding | None:
    args = _call_args(toks, i)
    if len(args) != 3 or not _is_false(args[2]):
        return None  # is_local true, or not known before the statement runs
    name_arg = args[0]
    if (
        len(name_arg) == 1
        and name_arg[0].kind == _S
        and name_arg[0].text.strip().lower() in TRACKED_PARAMETERS
    ):
        return None
    # A name that is a bound parameter is unknown: most parameters are untracked.
    safe = f"set_config({_render(sql, name_arg, 40)}, {_render(sql, args[1], 30)}, true)"
    return _make("set", stmt, safe, _set_message(stmt, safe))
