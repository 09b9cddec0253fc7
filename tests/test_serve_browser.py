"""The demo page of `nlp-rnn serve` in a real headless Chromium (Debian's, driven by Playwright;
nothing downloads a browser): each built-in task's page, typed into, and its rendered result.

The models are the built-in default pipeline's, trained as shipped (what Getting started's
`nlp-rnn run pipeline` trains; or NLP_RNN_SERVED_MODELS=DIR's), and each page must show the
right answer for its example, so a screenshot can only show a model that gets it right. Set
NLP_RNN_SCREENSHOTS=docs to also write the site's screenshots (docs/serve_*.png, shown on
Getting started and the serving guide).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser_helpers import NEEDS_CHROMIUM, chromium
from serve_helpers import NER_TEXT, direct_call

pytestmark = [
    pytest.mark.acceptance,  # a real browser
    NEEDS_CHROMIUM,
]
SCREENSHOTS = os.environ.get("NLP_RNN_SCREENSHOTS")
DEFAULT_PIPELINES = ("sentiment", "ner", "translation", "lm")  # the built-in default's

# each page's example and the answer a model that learned its corpus gives
SENTIMENT_TEXT, SENTIMENT_LABEL = "not bad at all , a great film", "positive"
NER_ENTITIES = [("PER", "Peter Miller"), ("LOC", "Paris"), ("PER", "Anna Schmidt")]
DATE_TEXT, DATE_TRANSLATION = "3 / 21 / 1999", "21 de marzo de 1999"


@pytest.fixture(scope="module")
def served_models(tmp_path_factory) -> dict:
    """Model name -> export folder of each pipeline of the built-in default, trained as shipped
    (the session's tiny test models need not get the examples right); NLP_RNN_SERVED_MODELS=DIR
    serves DIR/<name> instead (e.g. saved_models after `nlp-rnn run pipeline`)."""
    if os.environ.get("NLP_RNN_SERVED_MODELS"):
        given = Path(os.environ["NLP_RNN_SERVED_MODELS"])
        return {name: given / name for name in DEFAULT_PIPELINES}
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("default_pipeline")
    models = {}
    for name in DEFAULT_PIPELINES:
        config = load_pipeline(
            name, [f"export.dir={root / 'saved_models'}"], output_dir=str(root / "runs")
        )
        models[name] = run_pipeline(config, log=lambda line: None).export_path.parent
    return models


@pytest.fixture(scope="module")
def model_server(served_models):
    from serve_helpers import running_server

    with running_server(list(served_models.values())) as server:
        yield server


@pytest.fixture(scope="module")
def page(model_server):
    with chromium() as browser:
        tab = browser.new_page(viewport={"width": 800, "height": 500})
        tab.set_default_timeout(60_000)
        tab.server = model_server
        yield tab


def open_demo(page, name: str):
    page.goto(f"{page.server.url}/demo/{name}")
    page.wait_for_selector("#main[data-ready=true]")


def finish(page, name: str):
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{SCREENSHOTS}/serve_{name}.png")


def test_index_lists_every_model(page, served_models):
    page.goto(page.server.url + "/")
    page.wait_for_selector(".cards li")
    assert sorted(page.locator(".cards a").all_inner_texts()) == sorted(served_models)
    page.click("text=ner")
    page.wait_for_selector("#main[data-ready=true]")
    assert page.url.endswith("/demo/ner")


def test_classification_shows_the_label_and_a_bar_per_class(page, served_models):
    open_demo(page, "sentiment")
    page.fill("#text", SENTIMENT_TEXT)
    page.click("#run")
    label = page.wait_for_selector("#label").inner_text()
    expected = direct_call(
        served_models["sentiment"], "serving_default", {"text": [SENTIMENT_TEXT]}
    )
    assert label == expected["label"][0]
    assert label == SENTIMENT_LABEL
    bars = page.locator(".bar-row")
    assert bars.count() == len(expected["probabilities"][0])
    top = page.locator(".bar-row.top")
    assert top.get_attribute("data-label") == label
    width = top.locator(".bar-fill").evaluate("e => parseFloat(e.style.width)")
    assert width == pytest.approx(100 * expected["probabilities"][0].max(), abs=0.1)
    finish(page, "classification")


def test_tagging_highlights_entities_inline_with_their_type(page, served_models):
    open_demo(page, "ner")
    page.fill("#text", NER_TEXT)
    page.click("#run")
    page.wait_for_selector("#entities")
    out = direct_call(served_models["ner"], "serving_default", {"text": [NER_TEXT]})
    tags = [t for t in out["tags"][0] if t]
    spans = [
        (m.get_attribute("data-type"), m.evaluate("e => e.firstChild.textContent"))
        for m in page.locator("mark.entity").all()
    ]
    tokens = NER_TEXT.split()
    expected, i = [], 0
    while i < len(tags):  # the model's IOB2 entities, as text
        if tags[i].startswith("B-"):
            j = i + 1
            while j < len(tags) and tags[j] == "I-" + tags[i][2:]:
                j += 1
            expected.append((tags[i][2:], " ".join(tokens[i:j])))
            i = j
        else:
            i += 1
    assert spans == expected
    assert spans == NER_ENTITIES
    assert "fly to" in page.locator("#entities").inner_text()  # inline, in the running text
    labels = page.locator("mark.entity .entity-label").all_inner_texts()
    assert [label.upper() for label in labels] == [kind.upper() for kind, _ in spans]
    finish(page, "tagging")


def test_translation_shows_the_output_and_the_attention_heatmap(page, served_models):
    open_demo(page, "translation")
    page.fill("#text", DATE_TEXT)
    page.fill("#beam-width", "3")
    page.click("#run")
    shown = page.wait_for_selector("#translated").text_content()
    out = direct_call(
        served_models["translation"], "translate_attention", {"text": [DATE_TEXT], "beam_width": 3}
    )
    assert shown == out["translation"][0]
    assert shown == DATE_TRANSLATION
    rows = page.locator("#heatmap tbody tr")
    assert rows.count() == sum(1 for t in out["output_tokens"][0] if t)  # tokens + [END]
    assert page.locator("#heatmap thead th").count() == 1 + sum(
        1 for t in out["source_tokens"][0] if t
    )
    finish(page, "translation")


def test_language_model_continues_the_prompt(page, served_models):
    open_demo(page, "lm")
    page.fill("#prompt", "the movie was ")
    page.fill("#temperature", "0")
    page.fill("#length", "15")
    page.click("#run")
    shown = page.wait_for_selector("#continuation").text_content()
    out = direct_call(
        served_models["lm"],
        "serving_default",
        {"prompt": ["the movie was "], "max_length": 15, "temperature": 0.0, "top_k": 0},
    )
    assert shown == out["continuation"][0] and len(shown) > 0
    finish(page, "language_model")
