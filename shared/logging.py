"""Structured logging: JSON lines when not on a terminal, and never a secret in any line."""

from __future__ import annotations

import functools
import json as stdlib_json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from shared import tracing

_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|signature|user_key|authorization|cookie|dsn|database_url)",
    re.IGNORECASE,
)
# user:password@ in URLs/DSNs, and bearer tokens inside free text.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")
_BEARER = re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Neither pattern above can match a text without one of these: one search instead of two subs
# for the common line (every string value of every line goes through here).
_MAY_HOLD_SECRET = re.compile(r"://|bearer", re.IGNORECASE)
REDACTED = "***"


def scrub_text(text: str) -> str:
    if _MAY_HOLD_SECRET.search(text) is None:
        return text
    return _BEARER.sub(r"\1" + REDACTED, _URL_PASSWORD.sub(r"\1" + REDACTED + r"\3", text))


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Whether a field's name says its value is secret (log lines reuse a few names)."""
    return _SECRET_KEY.search(key) is not None


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: hides values of secret-looking keys and passwords inside text."""
    for key, value in list(event_dict.items()):
        if _secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = scrub_text(value)
        elif hasattr(value, "get_secret_value"):
            event_dict[key] = REDACTED
    return event_dict


def _dumps(obj: Any, **kw: Any) -> str:
    """JSON for a log line with orjson (several times faster than the json module on the
    lines every request writes); what orjson refuses (an int past 64 bits) goes to json."""
    try:
        return orjson.dumps(obj, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return stdlib_json.dumps(obj, **kw)


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current trace's `trace_id` and `span_id` (shared.tracing)."""
    active = tracing.current()
    if active is not None:
        tp = active.traceparent
        event_dict.setdefault("trace_id", f"{tp.trace_id:032x}")
        event_dict.setdefault("span_id", f"{tp.span_id:016x}")
    return event_dict


def configure_logging(
    service: str, level: str = "INFO", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging through one redacting renderer."""
    out = stream or sys.stderr
    use_json = (not out.isatty()) if json is None else json
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.contextvars.bind_contextvars(service=service)
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
