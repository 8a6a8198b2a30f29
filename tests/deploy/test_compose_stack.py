"""The compose stack in real containers: a smoke flow through the published ports, then the
worker, the API and a Kafka broker SIGKILLed in turn during a stream of cancels, with every
cancellation reaching BPJS exactly once and every open screen."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest
import websockets

from tests.deploy.compose_stack import REPO, ROOM, ComposeStack
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.deploy

CANCELLER = "u-perawat"
STAFF = ["cancel antrean", "create antrean", "update antrean"]


class Screen:
    """One staff screen: a notifier session that records every message by type and queue id."""

    def __init__(self, stack: ComposeStack, user: str, perms: list[str]) -> None:
        self.url = stack.ws_url
        self.token = stack.token(user, perms)
        self.seen: dict[str, set[int]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def _run(self) -> None:
        async with websockets.connect(self.url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": self.token}))
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "ready":
                    self.ready.set()
                elif "queue_id" in message:
                    self.seen[message["type"]].add(int(message["queue_id"]))

    async def __aenter__(self) -> Screen:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 30)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # a session that ended early fails the test with its reason
        self._task.cancel()


async def register(client: httpx.AsyncClient, stack: ComposeStack, n: int) -> list[dict[str, Any]]:
    """n BPJS tickets, each with its booking seeded at the simulator."""
    headers = {"Authorization": f"Bearer {stack.token(CANCELLER, STAFF)}"}
    tickets = []
    for i in range(n):
        code = f"DPL{uuid.uuid4().hex[:12].upper()}"
        body = {
            "room_id": ROOM,
            "patient": {"mrn": f"RM-{i:06d}", "name": f"Pasien {i}"},
            "payer": "BPJS",
            "bpjs": {"booking_code": code},
        }
        response = await client.post("/antrian_ruangan", json=body, headers=headers)
        assert response.status_code == 201, response.text
        tickets.append(response.json())
    bookings = [
        {"kodebooking": t["bpjs"]["booking_code"], "tasks": {}, "cancelled": False, "served": False,
         "data": {}}
        for t in tickets
    ]  # fmt: skip
    stack.sim("POST", "/seed", json={"bookings": bookings})
    return tickets


async def cancel(
    client: httpx.AsyncClient, stack: ComposeStack, queue_id: int, failed: list[int] | None = None
) -> int:
    """Cancel as the staff UI does: on no answer or a 5xx, again with the same Idempotency-Key
    (each failed try is appended to `failed`); returns how many tries it took."""
    headers = {
        "Authorization": f"Bearer {stack.token(CANCELLER, STAFF)}",
        "Idempotency-Key": str(uuid.uuid4()),
    }
    for attempt in range(1, 400):
        try:
            response = await client.post(
                f"/antrian_ruangan/batal/{queue_id}", json={"reason_code": "no_show"},
                headers=headers,
            )  # fmt: skip
        except httpx.TransportError:
            response = None
        if response is None or response.status_code >= 500:
            if failed is not None:
                failed.append(queue_id)
            await asyncio.sleep(0.25)  # the UI's retry pace, not a wait for an effect
            continue
        assert response.status_code == 200, response.text
        return attempt
    raise AssertionError(f"ticket {queue_id} could not be cancelled")


def applied(stack: ComposeStack) -> dict[str, int]:
    return stack.sim("GET", "/stats")["applied_cancellations"]["antreanrs"]


def batal_calls(stack: ComposeStack) -> list[dict[str, Any]]:
    return stack.sim("GET", "/requests", params={"route": "antreanrs:batal"})


async def test_smoke_a_cancel_through_the_published_ports_reaches_bpjs_signed_and_every_screen(
    compose_stack: ComposeStack,
) -> None:
    stack = compose_stack
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=15) as client:
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready", ready
        (ticket,) = await register(client, stack, 1)
        code = ticket["bpjs"]["booking_code"]
        async with (
            Screen(stack, CANCELLER, STAFF) as screen,
            Screen(stack, "u-loket", ["cancel antrean"]) as other,
        ):
            response = await client.post(
                f"/antrian_ruangan/batal/{ticket['id']}",
                headers={"Authorization": f"Bearer {stack.token(CANCELLER, STAFF)}"},
            )
            assert response.status_code == 200, response.text
            assert response.json()["bpjs_sync"] == "pending"
            await wait_until(
                lambda: ticket["id"] in screen.seen["queue.cancelled"]
                and ticket["id"] in other.seen["queue.cancelled"],
                timeout=60, what="queue.cancelled on both screens",
            )  # fmt: skip
            await wait_until(
                lambda: ticket["id"] in screen.seen["bpjs.synced"], timeout=90,
                what="bpjs.synced on the canceller's screen",
            )  # fmt: skip
    calls = [c for c in batal_calls(stack) if code in c["body"]]
    assert len(calls) == 1, calls
    (call,) = calls
    # The simulator verified the signature with the keys both containers read from secrets.
    assert call["reply_status"] == 200 and call["note"] is None, call
    assert {"x-cons-id", "x-timestamp", "x-signature"} <= {h.lower() for h in call["headers"]}
    assert applied(stack)[code] == 1
    status = stack.sql(f"select status from bpjs_sync_job where queue_id = {int(ticket['id'])}")  # noqa: S608 (an integer)
    assert status == "synced"


async def test_worker_api_and_a_broker_killed_during_a_stream_of_cancels_lose_and_repeat_nothing(
    compose_stack: ComposeStack,
) -> None:
    stack = compose_stack
    n = 60
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        tickets = await register(client, stack, n)
        ids = [t["id"] for t in tickets]
        codes = {t["id"]: t["bpjs"]["booking_code"] for t in tickets}
        async with (
            Screen(stack, CANCELLER, STAFF) as screen,
            Screen(stack, "u-loket", ["cancel antrean"]) as other,
        ):
            done: list[int] = []
            failed: list[int] = []

            async def stream() -> None:
                for queue_id in ids:
                    await cancel(client, stack, queue_id, failed)
                    done.append(queue_id)
                    await asyncio.sleep(0.2)  # the stream's pace

            streaming = asyncio.create_task(stream())
            for service, after in (("bpjs-sync-worker", 10), ("cancel-api", 25), ("kafka-2", 40)):
                await wait_until(
                    lambda a=after: len(done) >= a, timeout=180, what=f"{after} cancels"
                )
                stack.kill(service)
                if service == "cancel-api":
                    # Down until the stream has had to retry against it.
                    await wait_until(lambda: len(failed) >= 3, timeout=60,
                                     what="cancels failing against the dead API")  # fmt: skip
                else:
                    # The stream goes on without it for a while.
                    await wait_until(lambda a=after: len(done) >= a + 5, timeout=120,
                                     what=f"cancels with {service} down")  # fmt: skip
                stack.start(service)
                stack.wait_healthy(service)
            await asyncio.wait_for(streaming, 300)
            assert failed, "the API kill was never seen by the stream"

            await wait_until(
                lambda: set(ids) <= screen.seen["queue.cancelled"]
                and set(ids) <= other.seen["queue.cancelled"],
                timeout=120, what="every cancel on every screen",
            )  # fmt: skip
            await wait_until(
                lambda: all(applied(stack).get(codes[i], 0) >= 1 for i in ids),
                timeout=240, what="every cancellation applied at BPJS",
            )  # fmt: skip
            await wait_until(
                lambda: set(ids) <= screen.seen["bpjs.synced"], timeout=120,
                what="bpjs.synced for every cancel",
            )  # fmt: skip
    effects = applied(stack)
    assert [i for i in ids if effects.get(codes[i]) != 1] == []
    id_list = ",".join(str(int(i)) for i in ids)
    states = stack.sql(
        f"select status, count(*) from bpjs_sync_job where queue_id in ({id_list}) group by status"  # noqa: S608 (integers)
    )
    assert states == f"synced|{n}", states
    # One QueueCancelled per ticket, however often the stream had to resend, all published.
    keys = ",".join(f"'{int(i)}'" for i in ids)
    events = stack.sql(
        "select count(*), count(*) filter (where published_at is null) from outbox"  # noqa: S608 (integers)
        f" where topic = 'queue-cancelled' and kafka_key in ({keys})"
    )
    assert events == f"{n}|0", events


def test_the_restore_drill_passes_against_the_compose_postgres(compose_stack: ComposeStack) -> None:
    """ops/backup/restore-drill.sh as docs/DEPLOY.md runs it: the container's own client
    programs over `docker compose exec`, the dump on the host."""
    stack = compose_stack
    prefix = " ".join([*stack.compose.compose_command_property, "exec", "-T", "postgres"])
    env = {
        **os.environ,
        "PG_EXEC": prefix,
        "PGUSER": "antrean",
        "PGDATABASE": "antrean",
        "BACKUP_DIR": str(stack.folder / "backups"),
    }
    done = subprocess.run(
        ["bash", str(REPO / "ops/backup/restore-drill.sh")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restore drill passed" in done.stdout, done.stdout
    assert "rows public.queue_ticket" in done.stdout
