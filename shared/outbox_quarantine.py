"""Outbox rows Kafka refuses for good: which errors are the row's fault, counting, quarantine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import asyncpg
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from prometheus_client import Counter, Gauge

from shared.logging import get_logger

log = get_logger(__name__)

OUTBOX_QUARANTINED = Counter(
    "outbox_quarantined_total", "Outbox rows quarantined after repeated refusals", ["topic"]
)
OUTBOX_QUARANTINED_ROWS = Gauge("outbox_quarantined_rows", "Outbox rows quarantined (kept)")
OUTBOX_REFUSED = Counter(
    "outbox_row_refusals_total", "Publish attempts Kafka refused for the row itself", ["topic"]
)

# Refusals of the record itself: sent again, it is refused again, whatever the broker's health.
ROW_ERRORS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,  # client side (max_request_size) and the broker's MESSAGE_TOO_LARGE
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
)
# Refusals of the topic: every row of the topic gets them alike (an ACL mistake, a missing
# topic, metadata not yet there), so they count against a row only when another row of the
# same topic went through in the same round; otherwise they are handled like an outage.
TOPIC_ERRORS: tuple[type[Exception], ...] = (
    TopicAuthorizationFailedError,
    InvalidTopicError,
    UnknownTopicOrPartitionError,
)
REFUSALS = ROW_ERRORS + TOPIC_ERRORS
ERROR_TEXT_MAX = 500

_RECORD_SQL = """
update outbox set attempts = attempts + 1, last_error = $2,
       quarantined_at = case when attempts + 1 >= $3 then clock_timestamp() end
where id = $1 returning attempts, quarantined_at
"""


def is_refusal(exc: BaseException) -> bool:
    """Whether `exc` may be the row's own fault (anything else is an outage: never counted)."""
    return isinstance(exc, REFUSALS)


def counts_against_row(exc: BaseException, topic_proven: bool) -> bool:
    """Whether a refusal of a row sent alone is the row's fault (`topic_proven`: another row of
    its topic was published in the same round)."""
    return isinstance(exc, ROW_ERRORS) or (isinstance(exc, TOPIC_ERRORS) and topic_proven)


class BatchRefused(Exception):
    """Kafka refused rows of a batch (`failed`: row id -> error); the batch rolls back."""

    def __init__(self, rows: Sequence[asyncpg.Record], failed: dict[int, BaseException]) -> None:
        super().__init__(f"{len(failed)} of {len(rows)} rows refused")
        self.rows = rows
        self.failed = failed


def raise_outage(futures: Iterable[asyncio.Future[object]]) -> None:
    """Raise the first error among the settled `futures` that is not a refusal (an outage)."""
    for fut in futures:
        if fut.done() and (exc := fut.exception()) is not None and not is_refusal(exc):
            raise exc


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX]


async def record_refusal(
    conn: asyncpg.Connection, row: asyncpg.Record, exc: BaseException, max_attempts: int
) -> bool:
    """Count a refusal against `row` (locked by the caller); quarantine it at `max_attempts`.
    Returns whether it is now quarantined. The payload is never logged."""
    result = await conn.fetchrow(_RECORD_SQL, row["id"], error_text(exc), max_attempts)
    assert result is not None
    topic = row["topic"]
    OUTBOX_REFUSED.labels(topic).inc()
    fields = {
        "event_id": str(row["event_id"]),
        "topic": topic,
        "key": row["kafka_key"],
        "attempts": result["attempts"],
        "error": error_text(exc),
    }
    if result["quarantined_at"] is None:
        log.warning("outbox_row_refused", max_attempts=max_attempts, **fields)
        return False
    OUTBOX_QUARANTINED.labels(topic).inc()
    log.error("outbox_row_quarantined", **fields)
    return True
