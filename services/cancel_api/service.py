"""Use cases of the cancel API; each runs in one transaction on a connection it is given."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter

from services.cancel_api import domain
from services.cancel_api import repository as repo
from services.cancel_api.errors import Problem
from services.cancel_api.schemas import CancelRequest, RegisterRequest, queue_out
from shared import tracing
from shared.auth import Principal
from shared.clinics import ZoneCache, clinic_zone, service_day
from shared.events import CancelledBy, QueueCancelledData, new_event
from shared.outbox import OutboxBell, outbox_values

CANCELS = Counter("queue_cancel_requests_total", "Cancel requests by outcome", ["outcome"])
CANCELS_CANCELLED = CANCELS.labels("cancelled")  # the common outcome: its child, looked up once
EVENT_SOURCE = "/antrean/cancel-api"


def request_hash(queue_id: int, body: CancelRequest) -> str:
    canonical = orjson.dumps(
        {"queue_id": queue_id, **body.model_dump()}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


async def cancel_ticket(
    pool: asyncpg.Pool,
    who: Principal,
    queue_id: int,
    body: CancelRequest,
    *,
    topic: str,
    bell: OutboxBell,
    idempotency_key: str | None,
    request_id: str | None,
) -> dict[str, Any]:
    """Cancel a waiting ticket: status, audit row and outbox event commit together or not at all.
    The event and its outbox row carry the trace context of this transaction's span; `bell`
    wakes the relay once they are committed."""
    with tracing.span(
        "cancel transaction",
        kind=tracing.SpanKind.CLIENT,
        attributes={"db.system.name": "postgresql", "queue_id": queue_id},
        expected=(Problem,),
    ):
        key = None
        if idempotency_key is not None:
            key = repo.IdempotencyKey(idempotency_key, request_hash(queue_id, body))
        async with pool.acquire() as conn:
            # Fast path, two round trips: read the ticket, then one statement that cancels it,
            # writes the audit and outbox rows (and stores the response under the key), and
            # changes nothing unless the ticket is still waiting and unchanged and the key new.
            # Anything else (no ticket, not waiting, changed meanwhile, a key already stored)
            # takes the locked path below, which decides 404/409/422 or the replay under locks.
            row = await repo.read_ticket_for_cancel(conn, who.clinic_id, queue_id)
            if row is not None and domain.cancel_refusal(row["status"]) is None:
                try:
                    response = await _cancel(conn, who, row, body, topic, request_id, key)
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name != repo.IDEMPOTENCY_KEY_CONSTRAINT:
                        raise
                    response = None  # the key is stored already: nothing was written
                if response is not None:  # one statement, committed as it returned
                    bell.ring(topic)
                    CANCELS_CANCELLED.inc()
                    return response
            async with conn.transaction():
                response, fresh = await _cancel_locked(
                    conn, who, queue_id, body, topic, key, request_id
                )
        if fresh:
            bell.ring(topic)
            CANCELS_CANCELLED.inc()
        return response


async def _cancel_locked(
    conn: asyncpg.Connection,
    who: Principal,
    queue_id: int,
    body: CancelRequest,
    topic: str,
    key: repo.IdempotencyKey | None,
    request_id: str | None,
) -> tuple[dict[str, Any], bool]:
    """The cancel in the caller's transaction, deciding on the ticket row locked FOR UPDATE;
    (response body, False when it replays the stored response of the idempotency key)."""
    if key is None:
        row = await repo.read_ticket_for_cancel(conn, who.clinic_id, queue_id, for_update=True)
    else:
        await repo.lock_idempotency_key(conn, who.clinic_id, who.user_id, key.key)
        row = await repo.read_key_and_ticket_for_cancel(
            conn, who.clinic_id, who.user_id, key.key, queue_id
        )
        if row["request_hash"] is not None:
            if row["request_hash"] != key.request_hash:
                CANCELS.labels("idempotency_conflict").inc()
                raise Problem(
                    422,
                    "idempotency_key_reused",
                    "Idempotency-Key ini sudah dipakai untuk permintaan lain.",
                )
            CANCELS.labels("replayed").inc()
            return dict(row["response_body"]), False
        if row["id"] is None:
            row = None
    if row is None:
        CANCELS.labels("not_found").inc()
        raise Problem(
            404,
            "queue_not_found",
            f"Antrean {queue_id} tidak ditemukan.",
            title=domain.TITLE_CANNOT_CANCEL,
        )
    refusal = domain.cancel_refusal(row["status"])
    if refusal is not None:
        CANCELS.labels(refusal.code).inc()
        raise Problem.refused(refusal, row["status"])
    response = await _cancel(conn, who, row, body, topic, request_id, key)
    if response is None:  # cannot happen: we hold the row lock and the ticket is waiting
        raise RuntimeError(f"cancel of locked waiting queue {queue_id} changed no row")
    return response, True


async def _cancel(
    conn: asyncpg.Connection,
    who: Principal,
    row: asyncpg.Record,
    body: CancelRequest,
    topic: str,
    request_id: str | None,
    key: repo.IdempotencyKey | None = None,
) -> dict[str, Any] | None:
    """Cancel the waiting ticket `row` (ticket, audit and outbox rows, and given `key` the
    response stored under it, in one statement); its response body, or None when the ticket is
    no longer waiting or changed since `row`."""
    # The event is built before the write from the fields the statement checks are unchanged;
    # `cancelled_at` is the reading transaction's now(), which the statement stores.
    sync = "pending" if domain.needs_bpjs_sync(row["payer"]) else None
    event = new_event(
        _cancelled_data(row, who, body),
        source=EVENT_SOURCE,
        traceparent=tracing.current_traceparent(),
    )
    stored = None
    if key is not None:
        # The key's row is written by the cancel statement itself, so its response is built
        # first: the ticket as that statement leaves it, `row` (which it checks is unchanged)
        # with what it sets.
        stored = _response(_as_cancelled(row, who, body, sync), sync)
    updated = await repo.cancel_with_audit_and_event(
        conn,
        who,
        row,
        reason_code=body.reason_code,
        reason_text=body.reason_text,
        bpjs_sync=sync,
        request_id=request_id,
        outbox_row=outbox_values(topic, event),
        key=key,
        response=stored,
    )
    if updated is None:
        return None
    response = _response(updated, sync)
    if stored is not None and response != stored:
        # Cannot happen while the statement checks `updated_at`. On the locked path this rolls
        # everything back; on the fast path the cancel has committed and a retry replays it.
        raise RuntimeError(f"queue {row['id']}: the stored response differs from the row written")
    return response


def _response(ticket: Any, sync: str | None) -> dict[str, Any]:
    return {
        "queue": queue_out(ticket),
        "bpjs_sync": sync or "not_required",
        "message": domain.MESSAGE_CANCELLED,
    }


def _as_cancelled(
    row: asyncpg.Record, who: Principal, body: CancelRequest, sync: str | None
) -> dict[str, Any]:
    """The waiting ticket `row` as `repo.cancel_with_audit_and_event` leaves it."""
    return {
        **dict(row),
        "status": "cancelled",
        "cancelled_at": row["tx_now"],
        "cancelled_by_id": who.user_id,
        "cancelled_by_name": who.name,
        "reason_code": body.reason_code,
        "reason_text": body.reason_text,
        "bpjs_sync": sync,
    }


def _cancelled_data(row: asyncpg.Record, who: Principal, body: CancelRequest) -> QueueCancelledData:
    """The QueueCancelled payload of the waiting ticket `row` once `who` cancels it with `body`
    (the values the cancel statement writes to the ticket)."""
    return QueueCancelledData.of_ticket(
        row,
        reason_code=body.reason_code,
        reason_text=body.reason_text,
        cancelled_by=CancelledBy(user_id=who.user_id, name=who.name),
        cancelled_at=row["tx_now"],
    )


async def register_ticket(
    pool: asyncpg.Pool,
    who: Principal,
    body: RegisterRequest,
    *,
    bpjs_service: str,
    timezone: str,
    request_id: str | None,
    zones: ZoneCache | None = None,
) -> dict[str, Any]:
    """A new waiting ticket, numbered per room and the clinic's own service day (its zone,
    else `timezone`)."""
    bpjs = body.bpjs if body.payer == "BPJS" else None
    if body.payer == "BPJS":
        problem = domain.bpjs_problem(bpjs_service, bpjs)
        if problem:
            raise Problem(422, "invalid_request", problem)
    elif body.bpjs is not None:
        raise Problem(422, "invalid_request", "bpjs hanya diisi untuk penjamin BPJS")
    async with pool.acquire() as conn:
        day = service_day(
            await clinic_zone(conn, who.clinic_id, timezone, zones), datetime.now(UTC)
        )
        async with conn.transaction():
            seq = await repo.next_seq(conn, who.clinic_id, body.room_id, day)
            row = await repo.insert_ticket(
                conn,
                clinic_id=who.clinic_id,
                room_id=body.room_id,
                service_date=day,
                ticket_seq=seq,
                ticket_number=domain.ticket_number(body.room_id, seq),
                patient_mrn=body.patient.mrn,
                patient_name=body.patient.name,
                payer=body.payer,
                bpjs=bpjs,
            )
            await repo.audit(
                conn,
                who,
                queue_id=row["id"],
                action="register",
                from_status=None,
                to_status="waiting",
                request_id=request_id,
            )
    return queue_out(row)


async def move_ticket(
    pool: asyncpg.Pool, who: Principal, queue_id: int, action: str, *, request_id: str | None
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.get_ticket(conn, who.clinic_id, queue_id, for_update=True)
        if row is None:
            raise Problem(404, "queue_not_found", f"Antrean {queue_id} tidak ditemukan.")
        refusal = domain.transition_refusal(action, row["status"])
        if refusal is not None:
            raise Problem.refused(refusal, row["status"])
        target = domain.TRANSITIONS[action][1]
        updated = await repo.set_status(conn, queue_id, target)
        await repo.audit(
            conn,
            who,
            queue_id=queue_id,
            action=action,
            from_status=row["status"],
            to_status=target,
            request_id=request_id,
        )
    return queue_out(updated)
