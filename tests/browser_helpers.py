"""Headless Debian Chromium for the browser tests (the demo page, the documentation site)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
)
# --no-sandbox: CI runs as root. Without the crash-reporter switches Chromium starts two
# chrome_crashpad_handler daemons that outlive browser.close() (the leftover-process check in
# conftest.py then fails the test that launched it).
ARGS = ["--no-sandbox", "--disable-crash-reporter", "--disable-crashpad-for-testing"]


def launch(playwright):
    """A headless Chromium browser from ``sync_playwright()``'s ``playwright``."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
