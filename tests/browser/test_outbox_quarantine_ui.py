"""The admin view shows quarantined outbox events of the clinic, only when there are some."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from playwright.async_api import expect

from tests.browser.axe import assert_accessible
from tests.browser.pages import ADMIN, open_room
from tests.fixtures.api import token

pytestmark = pytest.mark.browser


async def test_the_admin_view_lists_quarantined_outbox_events_only_when_there_are_some(
    browser, stack, database
):
    admin = token(perms=ADMIN, user="u-adm", name="Admin")
    page = await open_room(browser, stack, admin)
    await page.locator("#tab-admin").click()
    await expect(page.locator("#admin-empty")).to_be_visible()
    await expect(page.locator("#quarantine")).to_be_hidden()

    ticket = await stack.register("Ani")
    event_id = str(uuid.uuid4())
    owner = await asyncpg.connect(database)
    try:
        await owner.execute(
            "insert into outbox (event_id, topic, kafka_key, event_type, payload, attempts,"
            " last_error, quarantined_at) values ($1, $2, $3, 'QueueCancelled', $4, 5, $5, now())",
            event_id,
            f"{stack.topic_prefix}queue-cancelled",
            str(ticket["id"]),
            b"{}",
            "MessageSizeTooLargeError: [Error 10] MessageSizeTooLargeError",
        )
    finally:
        await owner.close()
    await page.locator("#admin-refresh").click()
    row = page.locator(f'#quarantine-table tr[data-event-id="{event_id}"]')
    await expect(page.locator("#quarantine-heading")).to_have_text("Event tertahan di outbox")
    await expect(row).to_contain_text(ticket["ticket_number"])
    await expect(row).to_contain_text("MessageSizeTooLargeError")
    await assert_accessible(page, "admin-quarantine")
    await page.locator("#lang").select_option("en")
    await expect(page.locator("#quarantine-heading")).to_have_text("Events held in the outbox")
    await assert_accessible(page, "admin-quarantine-en")
    await page.locator("#lang").select_option("id")
