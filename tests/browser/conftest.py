"""Debian's Chromium, driven by Playwright, shared by the browser tests of one module."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright


@pytest.fixture(scope="module")
async def browser():
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield b
        await b.close()
