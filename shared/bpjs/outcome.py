"""Pure classification of a BPJS reply: success, already done, retryable or rejected."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Replies that mean "this was already done": an idempotent retry after a lost reply must count
# as success. The only place message text is read; everything else decides on codes.
ALREADY_DONE_PATTERNS: tuple[str, ...] = (
    r"sudah\s+dibatalkan",
    r"sudah\s+batal",
    r"telah\s+dibatalkan",
    r"taskid\s*=?\s*\d+\s+sudah\s+ada",
    r"duplikasi\s+kode\s*booking",
)
_ALREADY_DONE = re.compile("|".join(f"(?:{p})" for p in ALREADY_DONE_PATTERNS), re.IGNORECASE)
_SUCCESS_CODES = frozenset({200, 1})  # antreanfktp may answer 1 for success
_DUPLICATE_CODE = 208
_RETRYABLE_STATUS = frozenset({408, 429})
_DETAIL_LEN = 200


class OutcomeKind(StrEnum):
    SUCCESS = "success"
    ALREADY_DONE = "already_done"
    RETRYABLE = "retryable"
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
) -> Outcome:
    """Classify one call from its transport facts, HTTP status and body (no I/O)."""
    if transport_error is not None:
        return _retry(f"transport error: {transport_error}")
    if http_status is None:
        return _retry("no HTTP response")
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
    return _from_metadata(http_status, _metadata(document), text)


def metadata_of(document: Any) -> dict[str, Any] | None:
    """The `metadata` / `metaData` object of a parsed reply, if any (key case ignored)."""
    return _metadata(document)


def _from_metadata(http_status: int, meta: dict[str, Any] | None, text: str) -> Outcome:
    if meta is None:
        return _retry(f"HTTP {http_status} JSON without metadata: {_excerpt(text)}")
    code = _code(meta.get("code"))
    message = str(meta.get("message") or "")
    if code is None:
        return _retry(f"HTTP {http_status} metadata without a numeric code: {_excerpt(text)}")
    detail = _short(f"BPJS {code}: {message}")
    if code in _SUCCESS_CODES:
        return Outcome(OutcomeKind.SUCCESS, code, message, detail)
    if code == _DUPLICATE_CODE or _ALREADY_DONE.search(message):
        return Outcome(OutcomeKind.ALREADY_DONE, code, message, detail)
    return Outcome(OutcomeKind.REJECTED, code, message, detail)


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
