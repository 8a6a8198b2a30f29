"""axe-core finds no serious or critical accessibility violation in any state of the staff UI:
the room view, the cancel dialog, every kind of toast, the admin view, in Indonesian and English."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page, expect

from tests.browser.axe import assert_accessible
from tests.browser.pages import (
    ADMIN,
    FAILURE,
    PROGRESS,
    SHOTS,
    SUCCESS,
    WARNING,
    card,
    open_dialog,
    open_room,
)
from tests.fixtures.api import token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.browser


async def still_shown(page: Page, selector: str) -> None:
    """A toast that hides itself must have been there for the whole axe run: a removed toast
    never comes back, so seeing it afterwards proves axe examined it."""
    assert await page.locator(selector).count() == 1, f"{selector} went away during the axe run"


async def test_room_view_and_cancel_dialog_in_both_languages_have_no_serious_violations(
    browser, stack
):
    a = await stack.register("Siti Aminah", payer="BPJS")
    await stack.register("Budi Santoso", payer="UMUM")
    await stack.register("Rudi Hartono", payer="ASURANSI")
    await stack.register("Dewi Lestari", room="POLI-GIGI")
    page = await open_room(browser, stack)
    await expect(page.locator(".card")).to_have_count(3)
    await assert_accessible(page, "room")
    await open_dialog(page, a)
    await assert_accessible(page, "cancel-dialog")
    await page.keyboard.press("Escape")
    await expect(page.locator("#confirm")).to_be_hidden()
    await expect(card(page, a).locator("button.x")).to_be_focused()
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "a11y-room-focus.png"))

    await page.locator("#room-picker").select_option("")  # all rooms: each card names its room
    await expect(page.locator(".card .room")).to_have_count(4)
    await assert_accessible(page, "all-rooms")

    await page.locator("#lang").select_option("en")
    await expect(card(page, a).locator(".x-label")).to_have_text("Cancel")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await assert_accessible(page, "room-en")
    await open_dialog(page, a)
    await assert_accessible(page, "cancel-dialog-en")
    await page.screenshot(path=str(SHOTS / "a11y-dialog-en.png"))
    await page.keyboard.press("Escape")
    await page.locator("#lang").select_option("id")


async def test_progress_success_and_error_toasts_have_no_serious_violations(browser, stack):
    a = await stack.register("Siti")
    b = await stack.register("Budi")
    page = await open_room(browser, stack)
    release = asyncio.Event()

    async def hold(route):
        await release.wait()
        await route.continue_()

    await page.route("**/antrian_ruangan/batal/*", hold)
    await open_dialog(page, a)
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.progress")).to_have_text(PROGRESS)
    await expect(page.locator("#overlay")).to_be_visible()
    await assert_accessible(page, "toast-progress")
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "a11y-progress.png"))
    release.set()
    await expect(page.locator(".toast.success .toast-text")).to_have_text(SUCCESS)
    await expect(page.locator("#overlay")).to_be_hidden()
    await assert_accessible(page, "toast-success")
    await still_shown(page, ".toast.success")
    await page.screenshot(path=str(SHOTS / "a11y-success.png"))

    await open_dialog(page, b)
    r = await stack.post(f"/antrian_ruangan/terima/{b['id']}")  # accepted meanwhile
    assert r.status_code == 200, r.text
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.error .toast-text")).to_have_text(FAILURE)
    await assert_accessible(page, "toast-error")
    await still_shown(page, ".toast.error")
    await page.screenshot(path=str(SHOTS / "a11y-error.png"))


async def test_bpjs_warning_toast_and_admin_view_in_every_sync_status_have_no_serious_violations(
    browser, bpjs_stack
):
    sim = bpjs_stack.sim
    admin = token(perms=ADMIN, user="u-adm", name="Admin")
    sim.seed_booking("BK-OK")
    sim.seed_booking("BK-DONE", served=True)  # BPJS refuses this one for good: failed
    synced = await cancel_and_wait(bpjs_stack, admin, "Ani", "BK-OK", "synced")
    failed = await cancel_and_wait(bpjs_stack, admin, "Budi", "BK-DONE", "failed")
    sim.seed_booking("BK-WARN")
    sim.set_fault("antreanrs:batal", "http_504")  # BPJS keeps timing out: the staff are warned
    a = await bpjs_stack.register("Siti Aminah", payer="BPJS", booking="BK-WARN")
    page = await open_room(browser, bpjs_stack, admin)
    await open_dialog(page, a)
    await page.locator("input[value=data_error]").check()
    await page.locator("#reason-text").fill("NIK salah ketik")
    await page.locator("#confirm-yes").click()
    warning = page.locator(".toast.warning")
    await expect(warning.locator(".toast-text")).to_have_text(WARNING, timeout=30000)
    await assert_accessible(page, "toast-warning")

    await page.locator("#tab-admin").click()
    row = page.locator(f'#admin-table tr[data-queue-id="{a["id"]}"]')
    row_failed = page.locator(f'#admin-table tr[data-queue-id="{failed["id"]}"]')
    await expect(row).to_contain_text("Kesalahan data: NIK salah ketik")
    await expect(row_failed.locator(".badge")).to_have_class("badge sync-failed")
    await assert_accessible(page, "admin")
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "a11y-admin.png"))
    await row_failed.locator("[data-action=resolve]").click()
    await expect(page.locator("#resolve")).to_be_visible()
    await assert_accessible(page, "resolve-dialog")
    await page.locator("#resolve-note").fill("Dibatalkan manual di portal BPJS")
    await page.locator("#resolve-save").click()
    await expect(row_failed).to_have_count(0)

    filter_ = page.locator("#admin-filter")
    await filter_.select_option("synced")
    await expect(page.locator(f'#admin-table tr[data-queue-id="{synced["id"]}"]')).to_be_visible()
    await assert_accessible(page, "admin-synced")
    await filter_.select_option("resolved_manually")
    await expect(row_failed.locator(".note")).to_contain_text("Dibatalkan manual di portal BPJS")
    await assert_accessible(page, "admin-resolved")

    await page.locator("#lang").select_option("en")
    await filter_.select_option("unsynced")
    await expect(page.locator("#admin-heading")).not_to_have_text(
        "Pembatalan yang belum tersinkron ke BPJS"
    )
    await expect(row).to_be_visible()
    await assert_accessible(page, "admin-en")
    await page.screenshot(path=str(SHOTS / "a11y-admin-en.png"))
    await page.locator("#lang").select_option("id")


async def cancel_and_wait(stack, admin: str, name: str, booking: str, status: str) -> dict:
    """A BPJS ticket cancelled through the API whose sync reached `status`."""
    t = await stack.register(name, payer="BPJS", booking=booking)
    r = await stack.post(f"/antrian_ruangan/batal/{t['id']}", json={"reason_code": "no_show"})
    assert r.status_code == 200, r.text

    async def reached() -> bool:
        r = await stack.get(f"/bpjs_sync?status={status}", admin)
        return t["id"] in {i["queue"]["id"] for i in r.json()["items"]}

    await wait_until(reached, 30, what=f"{name}'s BPJS sync {status}")
    return t
