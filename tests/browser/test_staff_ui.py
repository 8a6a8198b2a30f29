"""The staff UI in Debian's Chromium (Playwright) against the whole stack as real processes."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
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
from tests.fixtures.api import read_events, token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.browser


async def test_room_shows_cards_and_the_dialog_has_the_exact_text_and_tidak_sends_nothing(
    browser, stack
):
    a = await stack.register("Siti Aminah", payer="BPJS")
    await stack.register("Budi Santoso", payer="UMUM")
    await stack.register("Rudi Hartono", payer="ASURANSI")
    page = await open_room(browser, stack)
    await expect(page.locator(".card")).to_have_count(3)
    await expect(card(page, a).locator(".ticket")).to_have_text(a["ticket_number"])
    await expect(card(page, a).locator(".patient")).to_have_text("Siti Aminah")
    await expect(card(page, a).locator(".badge")).to_have_text("BPJS")
    assert "#token=" not in page.url  # the token left the address bar
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "room.png"))
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/batal/" in r.url else None)
    await open_dialog(page, a)
    await expect(page.locator("#confirm-title")).to_have_text(
        f"Apakah anda yakin membatalkan antrean nomor tiket #{a['ticket_number']}?"
    )
    await expect(page.locator("#confirm-yes")).to_have_text("Ya")
    await page.locator("#confirm-no").click()
    await expect(page.locator("#confirm")).to_be_hidden()
    await expect(card(page, a)).to_be_visible()
    assert sent == []
    assert (await stack.get(f"/antrian_ruangan/{a['id']}")).json()["status"] == "waiting"


async def test_keyboard_only_focus_moves_into_the_dialog_esc_means_tidak_and_focus_returns(
    browser, stack
):
    a = await stack.register("Siti")
    page = await open_room(browser, stack)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/batal/" in r.url else None)
    button = card(page, a).locator("button.x")
    await button.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#confirm")).to_be_visible()
    assert await page.evaluate(
        "document.getElementById('confirm').contains(document.activeElement)"
    )
    await page.keyboard.press("Escape")
    await expect(page.locator("#confirm")).to_be_hidden()
    await expect(button).to_be_focused()
    assert sent == []


async def test_ya_gives_progress_toast_overlay_then_card_removal_and_success_toast(browser, stack):
    a = await stack.register("Siti")
    page = await open_room(browser, stack)
    release = asyncio.Event()

    async def hold(route):
        await release.wait()
        await route.continue_()

    await page.route("**/antrian_ruangan/batal/*", hold)
    await open_dialog(page, a)
    await page.locator("input[value=no_show]").check()
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.progress")).to_have_text(PROGRESS)
    await expect(page.locator("#overlay")).to_be_visible()
    await expect(page.locator("#main")).to_have_attribute("aria-busy", "true")
    await expect(page.locator("#toasts")).to_have_attribute("aria-live", "polite")
    release.set()
    await expect(card(page, a)).to_have_count(0)
    await expect(page.locator(".toast.success .toast-text")).to_have_text(SUCCESS)
    await expect(page.locator("#overlay")).to_be_hidden()
    await expect(page.locator("#main")).to_have_attribute("aria-busy", "false")
    got = (await stack.get(f"/antrian_ruangan/{a['id']}")).json()
    assert (got["status"], got["reason_code"]) == ("cancelled", "no_show")


async def test_a_second_browser_on_the_same_room_loses_the_card_within_a_second(browser, stack):
    a = await stack.register("Siti")
    first, second = await open_room(browser, stack), await open_room(browser, stack)
    await expect(card(second, a)).to_be_visible()
    await open_dialog(first, a)
    async with first.expect_response(lambda r: "/batal/" in r.url) as info:
        await first.locator("#confirm-yes").click()
    assert (await info.value).status == 200
    await card(second, a).wait_for(state="detached", timeout=1000)


async def test_a_ticket_accepted_meanwhile_gives_the_error_toast_and_keeps_the_card(browser, stack):
    a = await stack.register("Siti")
    page = await open_room(browser, stack)
    await open_dialog(page, a)
    r = await stack.post(f"/antrian_ruangan/terima/{a['id']}")
    assert r.status_code == 200, r.text
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.error .toast-text")).to_have_text(FAILURE)
    await expect(card(page, a)).to_be_visible()
    await expect(page.locator("#overlay")).to_be_hidden()


async def test_a_request_cut_off_mid_flight_removes_the_overlay_and_a_retry_cancels_once(
    browser, stack, infra
):
    a = await stack.register("Siti")
    held: list[str] = []  # queue.cancelled messages kept from the page while the line is "cut"
    to_page: dict = {}

    async def live_through_the_cut(page: Page) -> None:
        def route(ws) -> None:
            server = ws.connect_to_server()
            ws.on_message(server.send)
            to_page["send"] = ws.send
            server.on_message(lambda m: held.append(m) if "queue.cancelled" in m else ws.send(m))

        await page.route_web_socket(stack.notifier_ws, route)

    page = await open_room(browser, stack, before=live_through_the_cut)
    keys: list[str] = []

    async def cut_first(route):
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:
            await route.fetch()  # the server cancels, but the answer never reaches the page
            await route.abort("connectionreset")
        else:
            await route.continue_()

    await page.route("**/antrian_ruangan/batal/*", cut_first)
    await open_dialog(page, a)
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.error .toast-text")).to_contain_text("Koneksi terputus")
    await expect(page.locator("#overlay")).to_be_hidden()
    await expect(card(page, a)).to_be_visible()
    await open_dialog(page, a)  # the retry
    # While the dialog is open the news of the first cancel arrives and removes the card.
    await wait_until(lambda: held, what="queue.cancelled from the notifier")
    for message in held:
        to_page["send"](message)
    await expect(card(page, a)).to_have_count(0)
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.success .toast-text")).to_have_text(SUCCESS)
    await expect(page.locator("#overlay")).to_be_hidden()
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
    events = await read_events(infra.kafka, f"{stack.topic_prefix}queue-cancelled", expect=1)
    assert [e.data["queue_id"] for _, e in events] == [a["id"]]


async def test_a_cursor_the_notifier_will_not_replay_refetches_the_list_and_keeps_ready_cursor(
    browser, stack
):
    a = await stack.register("Siti")
    lists: list[str] = []

    async def stale_cursor(page: Page) -> None:
        page.on("request", lambda r: lists.append(r.url) if "/antrian_ruangan?" in r.url else None)
        await page.add_init_script("sessionStorage.setItem('antrean.cursor', 'not-a-cursor')")

    page = await open_room(browser, stack, before=stale_cursor)

    async def ready_cursor_stored() -> bool:
        stored = await page.evaluate("sessionStorage.getItem('antrean.cursor')")
        return bool(stored) and stored != "not-a-cursor"

    await wait_until(ready_cursor_stored, 10, what="the ready cursor stored")
    await wait_until(lambda: len(lists) >= 2, 10, what="the list fetched again after resync")
    await expect(card(page, a)).to_be_visible()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")


async def test_1013_and_4429_closes_are_retried_with_back_off_until_live(browser, stack):
    attempts: list[int] = []

    async def refuse_twice(page: Page) -> None:
        async def route(ws) -> None:
            attempts.append(len(attempts))
            if len(attempts) == 1:
                await ws.close(code=4429, reason="too many connections")
            elif len(attempts) == 2:
                await ws.close(code=1013, reason="not ready, try again")
            else:
                server = ws.connect_to_server()
                ws.on_message(server.send)
                server.on_message(ws.send)

        await page.route_web_socket(stack.notifier_ws, route)

    await open_room(browser, stack, before=refuse_twice)  # "denied" would never be live
    assert len(attempts) == 3


async def test_a_user_without_the_permission_sees_no_x(browser, stack):
    await stack.register("Siti")
    page = await open_room(browser, stack, token(perms=["create antrean", "update antrean"]))
    await expect(page.locator(".card")).to_have_count(1)
    await expect(page.locator("button.x")).to_have_count(0)


async def test_english_can_be_selected_and_the_ui_fits_a_tablet(browser, stack):
    a = await stack.register("Siti")
    page = await open_room(browser, stack, width=800, height=1280)
    await page.locator("#lang").select_option("en")
    await expect(card(page, a).locator(".x-label")).to_have_text("Cancel")
    await open_dialog(page, a)
    await expect(page.locator("#confirm-title")).to_have_text(
        f"Are you sure you want to cancel queue ticket #{a['ticket_number']}?"
    )
    box = await page.locator("#confirm").bounding_box()
    assert box is not None and box["width"] <= 800
    await page.keyboard.press("Escape")
    await page.locator("#lang").select_option("id")


async def test_bpjs_failure_gives_the_success_toast_then_the_exact_warning_until_dismissed(
    browser, bpjs_stack
):
    bpjs_stack.sim.seed_booking("BK-WARN")
    bpjs_stack.sim.set_fault("antreanrs:batal", "http_504")
    a = await bpjs_stack.register("Siti Aminah", payer="BPJS", booking="BK-WARN")
    page = await open_room(browser, bpjs_stack)
    await open_dialog(page, a)
    await page.locator("#confirm-yes").click()
    await expect(page.locator(".toast.success .toast-text")).to_have_text(SUCCESS)
    warning = page.locator(".toast.warning")
    await expect(warning.locator(".toast-text")).to_have_text(WARNING, timeout=30000)
    await expect(warning).to_have_attribute("role", "alert")
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "bpjs-warning.png"))
    await expect(page.locator(".toast.success")).to_have_count(0, timeout=10000)
    await expect(warning).to_be_visible()  # the success toast went away; the warning stays
    await warning.locator(".toast-close").click()
    await expect(warning).to_have_count(0)


async def test_admin_view_lists_unsynced_cancellations_retries_and_resolves_with_a_note(
    browser, bpjs_stack
):
    sim = bpjs_stack.sim
    sim.seed_booking("BK-RETRY")
    sim.set_fault("antreanrs:batal", "business_201", times=1, message="Sedang gangguan")
    sim.seed_booking("BK-DONE", served=True)  # BPJS refuses this one for good
    admin = token(perms=ADMIN, user="u-adm", name="Admin")

    async def failed_ids() -> set[int]:
        r = await bpjs_stack.get("/bpjs_sync?status=failed", admin)
        return {i["queue"]["id"] for i in r.json()["items"]}

    tickets = []
    # One after the other: the one-shot fault must hit the ticket meant for the retry.
    for name, booking in (("Ani", "BK-RETRY"), ("Budi", "BK-DONE")):
        t = await bpjs_stack.register(name, payer="BPJS", booking=booking)
        r = await bpjs_stack.post(
            f"/antrian_ruangan/batal/{t['id']}", json={"reason_code": "no_show"}
        )
        assert r.status_code == 200, r.text
        await wait_until(lambda t=t: _has(failed_ids(), t["id"]), 30, what=f"{name} sync failed")
        tickets.append(t)
    retry, resolve = tickets
    page = await open_room(browser, bpjs_stack, admin)
    await page.locator("#tab-admin").click()
    rows = page.locator("#admin-table tbody tr")
    row_retry = page.locator(f'#admin-table tr[data-queue-id="{retry["id"]}"]')
    row_resolve = page.locator(f'#admin-table tr[data-queue-id="{resolve["id"]}"]')
    await expect(rows).to_have_count(2)
    await expect(row_retry).to_contain_text(retry["ticket_number"])
    await expect(row_retry).to_contain_text("Ani")
    await expect(row_retry).to_contain_text("Tidak hadir")
    await expect(row_retry).to_contain_text("Sedang gangguan")
    await row_retry.locator("[data-action=retry]").click()
    await expect(page.locator(".toast.success .toast-text").first).to_have_text(
        "Sinkronisasi BPJS dijadwalkan ulang"
    )
    await expect(row_retry).to_have_count(0, timeout=30000)  # synced: no longer unsynced
    await row_resolve.locator("[data-action=resolve]").click()
    await expect(page.locator("#resolve")).to_be_visible()
    await page.locator("#resolve-save").click()  # an empty note is refused by the form
    await expect(page.locator("#resolve")).to_be_visible()
    await page.locator("#resolve-note").fill("Dibatalkan manual di portal BPJS")
    await page.locator("#resolve-save").click()
    await expect(row_resolve).to_have_count(0)
    done = (await bpjs_stack.get("/bpjs_sync?status=resolved_manually", admin)).json()["items"]
    assert [(i["queue"]["id"], i["sync"]["resolved_note"]) for i in done] == [
        (resolve["id"], "Dibatalkan manual di portal BPJS")
    ]
    synced = (await bpjs_stack.get(f"/antrian_ruangan/{retry['id']}", admin)).json()
    assert synced["bpjs_sync"] == "synced"


async def _has(ids, wanted: int) -> bool:
    return wanted in await ids


async def test_report_section_shows_counts_per_state_downloads_csv_and_asks_for_a_check(
    browser, stack, database
):
    admin = token(perms=ADMIN, user="u-adm", name="Admin")
    wib = ZoneInfo("Asia/Jakarta")  # CLINIC_TIMEZONE: the clinic has no zone of its own
    yesterday = datetime.now(wib).date() - timedelta(days=1)
    at = datetime.combine(yesterday, time(10), wib)
    tickets = {}
    for name in ("Ani", "Budi", "Cici"):
        t = await stack.register(name, payer="BPJS")
        r = await stack.post(f"/antrian_ruangan/batal/{t['id']}", json={"reason_code": "no_show"})
        assert r.status_code == 200, r.text
        tickets[name] = t
    conn = await asyncpg.connect(database)
    try:
        for i, t in enumerate(tickets.values()):
            await conn.execute(
                "update queue_ticket set cancelled_at = $2 where id = $1",
                t["id"],
                at + timedelta(minutes=i),
            )
        for name, status, extra in (
            ("Ani", "synced", "confirmable = true, confirmed_at = now()"),
            ("Budi", "failed", "confirmable = true, last_error_kind = 'not_recorded'"),
        ):
            t = tickets[name]
            await conn.execute(
                "insert into bpjs_sync_job (queue_id, cancel_event_id, clinic_id, ticket_number,"
                " service, event_data, first_phase_until, horizon_at, status)"
                " values ($1, gen_random_uuid(), 'KLINIK-A', $2, 'antreanrs', '{}', now(), now(),"
                " $3)",
                t["id"],
                t["ticket_number"],
                status,
            )
            await conn.execute(
                f"update bpjs_sync_job set {extra} where queue_id = $1",  # noqa: S608
                t["id"],
            )
            await conn.execute(
                "update queue_ticket set bpjs_sync = $2 where id = $1", t["id"], status
            )
    finally:
        await conn.close()

    page = await open_room(browser, stack, admin)
    await page.locator("#tab-admin").click()
    await expect(page.locator("#report-date")).to_have_value(yesterday.isoformat())
    counts = page.locator("#report-counts")
    for state, n in (("confirmed", 1), ("not_recorded", 1), ("pending", 1), ("failed", 0)):
        await expect(counts.locator(f'tr[data-state="{state}"] td')).to_have_text(str(n))
    await expect(page.locator("#report-table tbody tr")).to_have_count(3)
    budi = page.locator(f'#report-table tr[data-queue-id="{tickets["Budi"]["id"]}"]')
    await expect(budi).to_contain_text("Belum tercatat di BPJS")
    unsynced = page.locator(f'#admin-table tr[data-queue-id="{tickets["Budi"]["id"]}"]')
    await expect(unsynced).to_contain_text("BPJS belum mencatat pembatalan (not_recorded)")
    await expect(page.locator("#report-status")).to_contain_text("Asia/Jakarta")

    async with page.expect_download() as download:
        await page.locator("#report-csv").click()
    file = await download.value
    assert file.suggested_filename == f"bpjs-report-KLINIK-A-{yesterday.isoformat()}.csv"
    text = Path(await file.path()).read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("state,queue_id,ticket_number,room_id,booking_code")
    assert len(text.splitlines()) == 4

    await page.locator("#report-reconcile").click()
    await expect(page.locator(".toast.success .toast-text").first).to_contain_text("BPJS")
    await expect(page.locator("#report-status")).to_contain_text("belum selesai")
    await assert_accessible(page, "admin-report")
