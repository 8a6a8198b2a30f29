"""Pure classification of a BPJS reply: success, already done, retryable, auth error or rejected."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

# Replies that mean "this was already done": an idempotent retry after a lost reply must count
# as success. Message text is read only here and for authentication refusals (below);
# everything else decides on codes.
ALREADY_DONE_PATTERNS: tuple[str, ...] = (
    r"sudah\s+dibatalkan",
    r"sudah\s+batal",
    r"telah\s+dibatalkan",
    r"taskid\s*=?\s*\d+\s+sudah\s+ada",
    r"duplikasi\s+kode\s*booking",
)
_ALREADY_DONE = re.compile("|".join(f"(?:{p})" for p in ALREADY_DONE_PATTERNS), re.IGNORECASE)

_SEP = r"[\s_\-]*"  # "user_key", "user key", "user-key", "userkey" alike
_B = r"(?<![a-z0-9])"  # word edges where "_" separates too, as in "x_cons_id"
_E = r"(?![a-z0-9])"
_INVALID = (
    r"(?:tidak|tdk|not|belum)\s+(?:valid|sesuai|cocok|ditemukan|terdaftar|dikenal|berlaku)"
    r"|invalid|salah|wrong|expired|k[ae]d[ae]lu?w?arsa|not\s+found|unknown"
)
_EXPIRED = r"(?:expired|k[ae]d[ae]lu?w?arsa)"
# Replies that refuse the caller's credentials or clock, not the request: signature, consumer
# id, user key, timestamp, or a generic "authentication failed" / "unauthorized". Each needs a
# word naming the credential, so "Antrean Tidak Ditemukan" or "Data tidak valid" never match.
AUTH_ERROR_PATTERNS: tuple[str, ...] = (
    rf"{_B}signature",
    rf"{_B}tanda\s+tangan\s+(?:digital\s+)?(?:tidak|salah)",
    rf"{_B}cons(?:umer)?{_SEP}id{_E}",
    rf"{_B}consumer{_E}.*(?:{_INVALID})|(?:{_INVALID}).*{_B}consumer{_E}",
    rf"{_B}time{_SEP}stamp{_E}",
    rf"{_B}waktu{_SEP}(?:request|permintaan){_E}",
    rf"{_B}request{_SEP}time{_E}(?!{_SEP}out)",  # "request time", not a "request time out"
    rf"{_B}request{_SEP}(?:(?:sudah|telah|has|is){_SEP})?(?:been{_SEP})?{_EXPIRED}",
    rf"{_B}{_EXPIRED}{_SEP}request{_E}",
    rf"{_B}user{_SEP}key{_E}",
    rf"{_B}secret{_SEP}key{_E}",
    rf"{_B}(?:authenticat(?:e|ed|ion)|[ao]u?tentikasi){_E}",
    rf"{_B}(?:un{_SEP}|not{_SEP})authori[sz]ed{_E}|{_B}tidak\s+berwenang{_E}",
    rf"{_B}(?:akses{_SEP}ditolak|access{_SEP}denied|forbidden){_E}",
    rf"{_B}token{_E}.*(?:{_INVALID})|(?:{_INVALID}).*{_B}token{_E}",
    rf"{_B}(?:kredensial|credentials?){_E}",
)
_AUTH_ERROR = re.compile("|".join(f"(?:{p})" for p in AUTH_ERROR_PATTERNS), re.IGNORECASE)
_SUCCESS_CODES = frozenset({200, 1})  # antreanfktp may answer 1 for success
_DUPLICATE_CODE = 208
_RETRYABLE_STATUS = frozenset({408, 429})
_AUTH_STATUS = frozenset({401, 403})
_DETAIL_LEN = 200


class OutcomeKind(StrEnum):
    SUCCESS = "success"
    ALREADY_DONE = "already_done"
    RETRYABLE = "retryable"
    AUTH_ERROR = "auth_error"  # credentials or clock refused: an operator must act; never final
    REJECTED = "rejected"


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    code: int | None  # metadata.code when BPJS answered with one
    message: str  # metadata.message, or "" when there was none
    detail: str  # short text for logs and admins


def is_success(kind: OutcomeKind) -> bool:
    """True when the call's effect is in place at BPJS (done now or before)."""
    return kind in (OutcomeKind.SUCCESS, OutcomeKind.ALREADY_DONE)


def classify(
    transport_error: str | None,
    http_status: int | None,
    body: bytes | str | None,
    *,
    content_type: str | None = None,
    auth_error_patterns: Sequence[str] = (),
) -> Outcome:
    """Classify one call from its transport facts, HTTP status and body (no I/O).

    `auth_error_patterns` are regular expressions (case-insensitive) that mark more refusal
    messages as authentication errors, on top of AUTH_ERROR_PATTERNS.
    """
    if transport_error is not None:
        return _retry(f"transport error: {transport_error}")
    if http_status is None:
        return _retry("no HTTP response")
    if http_status in _AUTH_STATUS:
        return _auth_status(http_status, body)
    if http_status >= 500 or http_status in _RETRYABLE_STATUS:
        return _retry(f"HTTP {http_status}: {_excerpt(body)}")
    text = _text(body)
    if not text.strip():
        return _retry(f"HTTP {http_status} with an empty body")
    if _looks_html(text, content_type):
        # 200 or 4xx HTML pages come from the gateway or a proxy, not from the service.
        return _retry(f"HTTP {http_status} HTML page: {_excerpt(text)}")
    try:
        document = json.loads(text)
    except ValueError:
        return _retry(f"HTTP {http_status} non-JSON body: {_excerpt(text)}")
    extra = compile_auth_patterns(auth_error_patterns)
    return _from_metadata(http_status, _metadata(document), text, extra)


def compile_auth_patterns(patterns: Sequence[str]) -> tuple[re.Pattern[str], ...]:
    """Extra authentication-refusal patterns, compiled case-insensitive (cached).

    Raises ValueError naming the first pattern that is not a valid regular expression.
    """
    return _compiled(tuple(patterns))


@lru_cache(maxsize=32)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"invalid auth error pattern {pattern!r}: {exc}") from None
    return tuple(compiled)


def _is_auth_refusal(message: str, extra: tuple[re.Pattern[str], ...]) -> bool:
    return bool(_AUTH_ERROR.search(message)) or any(p.search(message) for p in extra)


def metadata_of(document: Any) -> dict[str, Any] | None:
    """The `metadata` / `metaData` object of a parsed reply, if any (key case ignored)."""
    return _metadata(document)


def _from_metadata(
    http_status: int,
    meta: dict[str, Any] | None,
    text: str,
    extra_auth: tuple[re.Pattern[str], ...],
) -> Outcome:
    if meta is None:
        return _retry(f"HTTP {http_status} JSON without metadata: {_excerpt(text)}")
    code = _code(meta.get("code"))
    message = str(meta.get("message") or "")
    if code is None:
        return _retry(f"HTTP {http_status} metadata without a numeric code: {_excerpt(text)}")
    detail = _short(f"BPJS {code}: {message}")
    if code in _SUCCESS_CODES:
        return Outcome(OutcomeKind.SUCCESS, code, message, detail)
    # Before "already done": the vocabulary names a credential, so a match is clearly auth.
    if _is_auth_refusal(message, extra_auth):
        return Outcome(OutcomeKind.AUTH_ERROR, code, message, detail)
    if code == _DUPLICATE_CODE or _ALREADY_DONE.search(message):
        return Outcome(OutcomeKind.ALREADY_DONE, code, message, detail)
    return Outcome(OutcomeKind.REJECTED, code, message, detail)


def _auth_status(http_status: int, body: bytes | str | None) -> Outcome:
    """HTTP 401/403: the gateway refused the caller, whatever the body (JSON, HTML, empty)."""
    text = _text(body)
    meta = None
    try:
        meta = _metadata(json.loads(text))
    except ValueError:
        pass
    code = _code(meta.get("code")) if meta is not None else None
    message = str(meta.get("message") or "") if meta is not None else ""
    detail = _short(f"HTTP {http_status}: {message or _excerpt(text)}")
    return Outcome(OutcomeKind.AUTH_ERROR, code, message, detail)


def _metadata(document: Any) -> dict[str, Any] | None:
    if not isinstance(document, dict):
        return None
    for key, value in document.items():
        if isinstance(key, str) and key.lower() == "metadata" and isinstance(value, dict):
            return value
    return None


def _code(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw.strip())
    return None


def _looks_html(text: str, content_type: str | None) -> bool:
    if content_type is not None and "html" in content_type.lower():
        return True
    # JSON never starts with "<": doctype, <html>, <?xml and bare error fragments all do.
    return text.lstrip().startswith("<")


def _text(body: bytes | str | None) -> str:
    if body is None:
        return ""
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return body


def _excerpt(body: bytes | str | None) -> str:
    return _short(" ".join(_text(body).split()))


def _short(text: str) -> str:
    return text if len(text) <= _DETAIL_LEN else text[: _DETAIL_LEN - 1] + "…"


def _retry(detail: str) -> Outcome:
    return Outcome(OutcomeKind.RETRYABLE, None, "", _short(detail))
