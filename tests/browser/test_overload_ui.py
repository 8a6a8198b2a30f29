"""The staff UI when the cancel API refuses a cancel while busy (503 `unavailable`), in Debian's
Chromium against the whole stack as real processes."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from playwright.async_api import expect

from tests.browser.pages import FAILURE, SUCCESS, card, open_dialog, open_room
from tests.fixtures.infra import lock_waiters, wait_until

pytestmark = pytest.mark.browser


async def test_a_cancel_refused_while_busy_shows_the_error_toast_and_the_retry_reuses_its_key(
    browser, busy_stack, database
):
    stack = busy_stack
    ticket = await stack.register("Siti")
    held = [(await stack.register(name))["id"] for name in ("Budi", "Wati")]
    page = await open_room(browser, stack)
    await expect(card(page, ticket)).to_be_visible()
    sent: list[tuple[str, str]] = []  # (Idempotency-Key, request body) of each cancel

    async def record(route):
        request = route.request
        sent.append((request.headers.get("idempotency-key", ""), request.post_data or ""))
        await route.continue_()

    await page.route("**/antrian_ruangan/batal/*", record)
    # Two other cancels wait on row locks inside the API: both its in-flight slots are taken.
    owner = await asyncpg.connect(database)
    try:
        lock = owner.transaction()
        await lock.start()
        await owner.execute("select 1 from queue_ticket where id = any($1) for update", held)
        others = [
            asyncio.create_task(stack.post(f"/antrian_ruangan/batal/{queue_id}"))
            for queue_id in held
        ]

        async def both_waiting() -> bool:
            return await lock_waiters(database) == 2

        await wait_until(both_waiting, what="the other cancels in flight")
        await open_dialog(page, ticket)
        await page.locator("input[value=no_show]").check()
        async with page.expect_response(lambda r: "/batal/" in r.url) as info:
            await page.locator("#confirm-yes").click()
        refused = await info.value
        assert refused.status == 503 and refused.headers["retry-after"]
        await expect(page.locator(".toast.error .toast-text")).to_have_text(FAILURE)
        await expect(card(page, ticket)).to_be_visible()
        await expect(page.locator("#overlay")).to_be_hidden()
        await lock.rollback()
    finally:
        await owner.close()
    assert [r.status_code for r in await asyncio.gather(*others)] == [200, 200]
    await open_dialog(page, ticket)  # the retry: the same request, reason already chosen
    await expect(page.locator("input[value=no_show]")).to_be_checked()
    async with page.expect_response(lambda r: "/batal/" in r.url) as info:
        await page.locator("#confirm-yes").click()
    assert (await info.value).status == 200
    await expect(page.locator(".toast.success .toast-text")).to_have_text(SUCCESS)
    await expect(card(page, ticket)).to_have_count(0)
    assert len(sent) == 2 and sent[0][0] and sent[0] == sent[1]
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetchval(
            "select count(*) from outbox where kafka_key = $1", str(ticket["id"])
        )
    finally:
        await conn.close()
    assert rows == 1


async def test_after_a_gateway_error_the_next_click_resends_the_same_key_and_cancels_once(
    browser, stack, database
):
    ticket = await stack.register("Siti")
    page = await open_room(browser, stack)
    keys: list[str] = []

    async def gateway_fails_first(route):
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:  # a proxy in front of the API: whether it cancelled is unknown
            await route.fulfill(status=502, content_type="text/html", body="Bad Gateway")
        else:
            await route.continue_()

    await page.route("**/antrian_ruangan/batal/*", gateway_fails_first)
    await open_dialog(page, ticket)
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.error .toast-text")).to_have_text(FAILURE)
    await expect(card(page, ticket)).to_be_visible()
    await open_dialog(page, ticket)
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.success .toast-text")).to_have_text(SUCCESS)
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
