"""Headless Debian Chromium for the browser tests (the demo page, the documentation site)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psutil
import pytest
from process_helpers import marked_processes

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

    started = time.time() - 0.5
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        # a module's browser must predate its first test by more than the leftover-process
        # check's slack (conftest.py: create_time is coarse), or that test counts it as its own
        time.sleep(1.5)
        try:
            yield browser
        finally:
            browser.close()
    for proc in marked_processes(started):
        with contextlib.suppress(psutil.Error):
            if "crashpad" in proc.name():
                proc.kill()
