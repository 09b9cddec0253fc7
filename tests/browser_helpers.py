"""Headless Debian Chromium for the browser tests (the demo page, the documentation site)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil
import pytest
from process_helpers import marked_processes, snapshot

CHROMIUM = Path("/usr/bin/chromium")
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
)


@contextlib.contextmanager
def chromium():
    """A headless Chromium browser (Playwright), closed on exit together with the two
    chrome_crashpad_handler daemons it starts, which outlive ``browser.close()`` (no switch
    turns them off without breaking page loads)."""
    from playwright.sync_api import sync_playwright

    before = snapshot()
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()
    for proc in marked_processes(before):
        with contextlib.suppress(psutil.Error):
            if "crashpad" in proc.name():
                proc.kill()
