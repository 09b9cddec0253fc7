"""The built documentation site in a real headless Chromium (Debian's, driven by Playwright;
nothing downloads a browser) and a link checker (LinkChecker, local files only) over all of it.

NLP_RNN_SITE=DIR checks the site .ci/run has just built there (`mkdocs build --strict`);
otherwise the test builds one itself (the docs extra: `pip install -e ".[docs]"`), which
executes every tutorial.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import click
import pytest
from browser_helpers import NEEDS_CHROMIUM, chromium
from docs_helpers import ROOT

from nlp_rnn.cli import main

pytestmark = [
    pytest.mark.acceptance,  # a real browser, and a site build that runs every tutorial
    NEEDS_CHROMIUM,
]
BROKEN_IMAGES = (
    "() => Array.from(document.images)"
    ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 120))"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    given = os.environ.get("NLP_RNN_SITE")
    if given:
        path = Path(given) if Path(given).is_absolute() else ROOT / given
        assert (path / "index.html").is_file(), f"NLP_RNN_SITE={given}: no built site there"
        return path
    pytest.importorskip(
        "mkdocs", reason='the docs extra is not installed (pip install -e ".[docs]")'
    )
    path = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(path)],
        cwd=ROOT,
        check=True,
        timeout=3600,  # every tutorial runs (each takes at most 5 minutes on 2 CPU cores)
    )
    return path


@pytest.fixture(scope="module")
def browser(site):  # no site (no docs extra): no browser either
    with chromium() as browser:
        yield browser


# module scope, like the browser: a test's function-scoped fixtures start after the leftover-
# process check (conftest.py) notes the time, so a browser started there would count as left over
@pytest.fixture(scope="module")
def page(browser):
    tab = browser.new_page(viewport={"width": 1200, "height": 900})
    tab.set_default_timeout(60_000)
    yield tab
    tab.close()


def visit(page, site: Path, relative: str):
    page.goto((site / relative).as_uri(), wait_until="load")
    return page


def test_home_page_renders_with_the_navigation(page, site):
    visit(page, site, "index.html")
    assert page.locator("h1").first.inner_text().startswith("nlp-rnn")
    nav = page.locator("nav.md-nav--primary").inner_text()
    for section in ("Getting started", "Tutorials", "How-to guides", "Reference", "Benchmarks"):
        assert section in nav
    assert page.evaluate(BROKEN_IMAGES) == []


def test_getting_started_shows_the_four_demo_screenshots(page, site):
    visit(page, site, "getting-started.html")
    shots = page.locator("img[src^='serve_']")
    assert shots.count() == 4
    assert all(w > 100 for w in shots.evaluate_all("els => els.map(e => e.naturalWidth)"))
    assert page.evaluate(BROKEN_IMAGES) == []


def tutorial_pages(site: Path) -> list[str]:
    return sorted(
        p.relative_to(site).as_posix()
        for p in (site / "tutorials").glob("*.html")
        if p.name != "index.html"
    )


def test_every_tutorial_renders_with_the_figures_its_run_made(page, site):
    tutorials = tutorial_pages(site)
    assert "tutorials/long_range.html" in tutorials, tutorials
    for tutorial in tutorials:
        visit(page, site, tutorial)
        # mkdocs-jupyter renders the notebook executed at build time: its figures are the
        # run's outputs (inline PNGs), which the .py source does not contain
        figures = page.locator(".jupyter-wrapper img")
        assert figures.count() >= 1, f"{tutorial}: no figure in the executed tutorial"
        widths = figures.evaluate_all("els => els.map(e => e.naturalWidth)")
        assert all(w > 100 for w in widths), (tutorial, widths)
        assert page.evaluate(BROKEN_IMAGES) == [], tutorial
        assert page.locator(".jupyter-wrapper .jp-OutputArea-output").count() >= 1, tutorial


def commands(group: click.Group, prefix: str) -> list[str]:
    found = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        found.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            found += commands(command, f"{prefix} {name}")
    return found


def test_cli_reference_renders_every_command_with_its_options(page, site):
    visit(page, site, "reference/cli.html")
    headings = page.locator("article h2, article h3, article h4").all_inner_texts()
    headings = [h.strip().rstrip("¶").strip() for h in headings]
    expected = commands(main, "nlp-rnn")
    assert len(expected) >= 10
    assert sorted(set(expected) - set(headings)) == []
    text = page.locator("article").inner_text()
    for option in ("--set", "--dry-run", "--max-batch-size", "--trials", "--beam-width"):
        assert option in text


def test_pipeline_key_reference_is_generated_into_the_site(page, site):
    visit(page, site, "reference/pipeline-keys.html")
    text = page.locator("article").inner_text()
    for task in ("classification", "tagging", "translation", "language_model"):
        assert f"task: {task}" in text
    assert "model.rnn.recurrent_dropout" in text and "decoding.beam_width" in text


def link_check(start: Path, report: Path) -> list[dict]:
    """Every URL LinkChecker met crawling from ``start`` (local files; the checker follows links
    within the site and leaves other hosts alone), one dict per CSV row."""
    from linkcheck import configuration, director
    from linkcheck.cmdline import aggregate_url

    config = configuration.Configuration()
    config["verbose"] = True  # a row for valid URLs too: which pages were crawled
    config["status"] = False
    config["logger"] = config.logger_new("csv", fileoutput=1, filename=str(report))
    config.sanitize()
    aggregate = director.get_aggregate(config)
    aggregate_url(aggregate, start.as_uri())
    director.check_urls(aggregate)
    csv.field_size_limit(2**31 - 1)  # a figure's data: URL is one (long) field
    with report.open(newline="") as rows:
        return list(csv.DictReader((r for r in rows if not r.startswith("#")), delimiter=";"))


def broken(rows: list[dict]) -> list[str]:
    return [
        f"{r['urlname']} (on {r['parentname']}): {r['result']}"
        for r in rows
        if r["valid"] != "True"
    ]


def test_the_link_checker_reports_a_broken_link_and_image(tmp_path):
    pytest.importorskip(
        "linkcheck", reason='the docs extra is not installed (pip install -e ".[docs]")'
    )
    (tmp_path / "index.html").write_text(
        '<html><body><a href="page.html">ok</a><a href="gone.html">gone</a>'
        '<img src="missing.png"></body></html>'
    )
    (tmp_path / "page.html").write_text("<html><body>fine</body></html>")
    found = broken(link_check(tmp_path / "index.html", tmp_path.parent / "report.csv"))
    assert sorted(line.split(" ")[0] for line in found) == ["gone.html", "missing.png"]


def test_no_broken_link_or_image_anywhere_in_the_site(site, tmp_path):
    pytest.importorskip(
        "linkcheck", reason='the docs extra is not installed (pip install -e ".[docs]")'
    )
    rows = link_check(site / "index.html", tmp_path / "report.csv")
    assert broken(rows) == []
    crawled = {Path(unquote(urlparse(r["url"]).path)) for r in rows if r["url"].startswith("file:")}
    pages = {p for p in site.rglob("*.html") if p.name != "404.html"}
    assert sorted(str(p) for p in pages - crawled) == [], "pages the checker never reached"
