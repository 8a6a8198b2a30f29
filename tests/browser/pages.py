"""Opening the staff UI and finding its parts, for the browser tests."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page, expect

from tests.fixtures.api import token

# Screenshots go to an ignored folder; docs/screenshots holds the ones chosen for the README.
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "screenshots"
PROGRESS = "Sedang membatalkan antrean, harap tunggu..."
SUCCESS = "Antrean berhasil dibatalkan"
FAILURE = "Tidak dapat membatalkan antrean"
WARNING = (
    "Pembatalan berhasil, namun terjadi masalah sinkronisasi dengan BPJS. "
    "Silakan hubungi administrator jika diperlukan."
)
ADMIN = ["cancel antrean", "manage bpjs sync"]


async def open_room(
    browser: Browser,
    stack,
    tok: str | None = None,
    room: str = "POLI-UMUM",
    before=None,
    **viewport,
) -> Page:
    ctx = await browser.new_context(viewport=viewport or {"width": 1366, "height": 768})
    page = await ctx.new_page()
    if before is not None:
        await before(page)
    await page.goto(stack.ui_url(tok or token(), room))
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    return page


def card(page: Page, ticket: dict):
    return page.locator(f'.card[data-queue-id="{ticket["id"]}"]')


async def open_dialog(page: Page, ticket: dict) -> None:
    await card(page, ticket).locator("button.x").click()
    await expect(page.locator("#confirm")).to_be_visible()
