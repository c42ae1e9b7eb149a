"""Real Chromium for the dashboard's tests: Debian's `chromium` (installed by .ci/run), driven
by Playwright, launched as the machine allows (no sandbox as root, no background networking:
nothing leaves 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("KONGFLOW_CHROMIUM") or shutil.which("chromium")
    if path is None:
        raise RuntimeError(
            "the dashboard's browser tests need Chromium: `apt-get install chromium` "
            "(or set KONGFLOW_CHROMIUM to its path)"
        )
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()
