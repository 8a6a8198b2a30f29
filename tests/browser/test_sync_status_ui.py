"""The admin view's status strip: worker status unknown, then the circuit breaker open since a
time (refreshed on its own), the oldest unsynced cancellation and dead letters, accessibly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from playwright.async_api import expect

from tests.browser.axe import assert_accessible
from tests.browser.pages import ADMIN, SHOTS, open_room
from tests.fixtures.api import token

pytestmark = pytest.mark.browser


async def test_status_strip_shows_unknown_workers_then_the_breaker_open_since_and_the_oldest(
    browser, stack, database
):
    ticket = await stack.register("Ani", payer="BPJS")
    r = await stack.post(f"/antrian_ruangan/batal/{ticket['id']}", json={"reason_code": "no_show"})
    assert r.status_code == 200, r.text  # no worker runs: it stays unsynced
    admin = token(perms=ADMIN, user="u-adm", name="Admin")
    page = await open_room(browser, stack, admin)
    await page.locator("#tab-admin").click()
    bpjs = page.locator("#status-bpjs")
    await expect(bpjs).to_have_attribute("role", "status")
    await expect(bpjs.locator(".status-text")).to_have_text("Status pekerja tidak diketahui")
    await expect(bpjs).to_have_attribute("data-state", "unknown")
    oldest = page.locator("#status-oldest")
    await expect(oldest).to_contain_text(f"tiket #{ticket['ticket_number']}")
    await expect(oldest).to_contain_text("Belum tersinkron: 1 (gagal 0)")
    await expect(page.locator("#status-dead")).to_have_text(
        "Dead letter (pesan yang tidak dapat diproses): 0"
    )

    # A worker's breaker opens (its row, as the worker writes it): the strip shows it at its
    # next refresh, with no click.
    opened = datetime.now(UTC) - timedelta(minutes=3)
    owner = await asyncpg.connect(database)
    try:
        await owner.execute(
            "insert into worker_status (worker_id, breaker_state, breaker_since)"
            " values ('w-browser', 'open', $1)",
            opened,
        )
    finally:
        await owner.close()
    await expect(bpjs).to_have_attribute("data-state", "breaker_open", timeout=25000)
    await expect(bpjs.locator(".status-text")).to_have_text(
        re.compile(r"^Circuit breaker terbuka sejak \d{2}[.:]\d{2}$")
    )
    await assert_accessible(page, "admin-status-breaker-open")
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "admin-status-breaker-open.png"))

    await page.locator("#lang").select_option("en")
    await expect(bpjs.locator(".status-text")).to_have_text(
        re.compile(r"^Circuit breaker open since \d{2}:\d{2}$")
    )
    await expect(oldest).to_contain_text(f"Oldest: ticket #{ticket['ticket_number']}")
    await assert_accessible(page, "admin-status-breaker-open-en")
    await page.locator("#lang").select_option("id")
