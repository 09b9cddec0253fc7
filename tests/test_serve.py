"""`nlp-rnn serve`: TF Serving's REST shapes for every task's model (values equal to the
SavedModel called directly), bad requests, dynamic batching and a version swapped in under load.

A real uvicorn server on 127.0.0.1 serves the tiny built-in models of the session fixture
``served_models``.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

import numpy as np
import pytest
from cli_helpers import cli_in_fresh_interpreter
from serve_helpers import NER_TEXT, direct_call, running_server

from nlp_rnn.serve.batcher import Batcher

LM_OPTIONS = {"max_length": 12, "temperature": 0.0, "top_k": 0}  # greedy: deterministic
# model -> (signature, columnar inputs of two rows)
REQUESTS = {
    "sentiment": ("serving_default", {"text": ["not bad at all", "a dull , boring film"]}),
    "ner": ("serving_default", {"text": [NER_TEXT, "Talks ended ."]}),
    "ner ": ("tag_tokens", {"tokens": [["Anna", "Schmidt", "met", "Kim"], ["In", "Oslo", "", ""]]}),
    "translation": ("serving_default", {"text": ["3 / 21 / 1999", "the first of may , 2001"]}),
    "translation ": (
        "translate_attention",
        {"text": ["3 / 21 / 1999", "june 2 , 1980"], "beam_width": 2},
    ),
    "lm": ("serving_default", {"prompt": ["the movie was ", ""], **LM_OPTIONS}),
}


@pytest.fixture
def server(model_server):
    return model_server


def assert_same(served, expected, name):
    if expected.dtype == object:
        assert np.array(served, dtype=object).tolist() == expected.tolist(), name
    else:  # JSON carries the float32 values exactly
        np.testing.assert_array_equal(np.array(served, dtype=expected.dtype), expected, name)


@pytest.mark.parametrize("key", sorted(REQUESTS))
def test_row_and_columnar_form_match_the_saved_model(server, served_models, key):
    model = key.strip()
    signature, inputs = REQUESTS[key]
    expected = direct_call(served_models[model], signature, inputs)

    status, body, headers = server.predict(model, {"signature_name": signature, "inputs": inputs})
    assert status == 200, body
    assert headers["x-model-version"] == "1"
    outputs = body["outputs"]
    if len(expected) == 1:  # one output: its value itself
        (name,) = expected
        assert_same(outputs, expected[name], name)
    else:
        assert set(outputs) == set(expected)
        for name, value in expected.items():
            assert_same(outputs[name], value, name)

    batched = {k: v for k, v in inputs.items() if isinstance(v, list)}
    scalars = {k: v for k, v in inputs.items() if not isinstance(v, list)}
    rows = len(next(iter(batched.values())))
    instances = [{**{k: v[i] for k, v in batched.items()}, **scalars} for i in range(rows)]
    if len(inputs) == 1:  # one input: bare values are instances too
        instances = next(iter(batched.values()))
    status, body, _ = server.predict(model, {"signature_name": signature, "instances": instances})
    assert status == 200, body
    predictions = body["predictions"]
    assert len(predictions) == rows
    for i, prediction in enumerate(predictions):
        if len(expected) == 1:
            assert_same([prediction], expected[next(iter(expected))][i : i + 1], key)
        else:
            assert set(prediction) == set(expected)
            for name, value in expected.items():
                assert_same([prediction[name]], value[i : i + 1], name)


def test_status_metadata_health_and_demo_listing(server, served_models):
    for name in served_models:
        status, body, _ = server.request(f"/v1/models/{name}")
        assert status == 200
        assert body == {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }
        assert server.request(f"/v1/models/{name}/versions/1")[0] == 200
    status, body, _ = server.request("/v1/models/sentiment/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "sentiment", "signature_name": "", "version": "1"}
    default = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert default["inputs"]["text"]["dtype"] == "DT_STRING"
    assert default["inputs"]["text"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert set(default["outputs"]) == {"label", "label_id", "probabilities"}
    assert default["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    lm = server.request("/v1/models/lm/versions/1/metadata")[1]
    assert (
        lm["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"][
            "temperature"
        ]["tensor_shape"]["dim"]
        == []
    )

    assert server.request("/healthz")[1] == {
        "status": "ok",
        "models": {n: 1 for n in served_models},
    }
    listing = {m["name"]: m for m in server.request("/nlp-rnn/models")[1]["models"]}
    widgets = {name: listing[name]["metadata"]["demo_widget"] for name in served_models}
    assert widgets == {
        "sentiment": "label_bars",
        "ner": "entity_spans",
        "translation": "seq2seq",
        "lm": "prompt",
    }
    assert "translate_attention" in listing["translation"]["signatures"]


BAD_REQUESTS = [  # (path, raw body, status, words in the error)
    ("/v1/models/sentiment:predict", b"{not json", 400, "malformed JSON"),
    ("/v1/models/sentiment:predict", b"[1, 2]", 400, "JSON object"),
    ("/v1/models/sentiment:predict", b'{"instances": []}', 400, "non-empty"),
    ("/v1/models/sentiment:predict", b'{"instances": ["a"], "inputs": ["a"]}', 400, "exactly one"),
    ("/v1/models/sentiment:predict", b'{"inputs": {"txt": ["a"]}}', 400, "unknown txt"),
    ("/v1/models/sentiment:predict", b'{"instances": [3]}', 400, "expected a string"),
    (
        "/v1/models/sentiment:predict",
        b'{"inputs": {"text": [["a"], ["b"]]}}',
        400,
        "expected a single value",
    ),
    ("/v1/models/sentiment:predict", b'{"inputs": {"text": "a"}}', 400, "expected a list"),
    (
        "/v1/models/sentiment:predict",
        b'{"signature_name": "nope", "instances": ["a"]}',
        400,
        "not found in signature def",
    ),
    (
        "/v1/models/lm:predict",
        b'{"inputs": {"prompt": ["a"], "max_length": "ten", "temperature": 0.5, "top_k": 0}}',
        400,
        "expected a number (int32)",
    ),
    (
        "/v1/models/lm:predict",
        b'{"inputs": {"prompt": ["a"], "max_length": 1.5, "temperature": 0.5, "top_k": 0}}',
        400,
        "expected an integer",
    ),
    ("/v1/models/lm:predict", b'{"inputs": {"prompt": ["a"]}}', 400, "missing max_length"),
    (
        "/v1/models/lm:predict",
        b'{"instances": [{"prompt": "a", "max_length": 3, "temperature"'
        b': 0.5, "top_k": 0}, {"prompt": "b", "max_length": 4, "temperature": 0.5, "top_k": 0}]}',
        400,
        "instances disagree",
    ),
    (
        "/v1/models/ner:predict",
        b'{"signature_name": "tag_tokens", "inputs": {"tokens": [["a", "b"], ["c"]]}}',
        400,
        "ragged",
    ),
    ("/v1/models/nope:predict", b'{"instances": ["a"]}', 404, "Servable not found"),
    ("/v1/models/sentiment/versions/7:predict", b'{"instances": ["a"]}', 404, "Servable not found"),
    ("/v1/models/sentiment/versions/7", None, 404, "version 7"),
    ("/v1/models/nope/metadata", None, 404, "Servable not found"),
    ("/v1/models/sentiment:classify", b'{"examples": []}', 400, "not supported"),
    ("/v1/models/sentiment:predict", None, 405, "POST"),
]


def test_every_bad_request_gets_its_status_and_the_server_keeps_serving(server):
    good = {"instances": ["not bad at all"]}
    for path, raw, status, words in BAD_REQUESTS:
        got, body, _ = server.request(path, raw=raw, method="POST" if raw is not None else "GET")
        assert (got, set(body)) == (status, {"error"}), (path, raw, body)
        assert words in body["error"], (path, body)
        assert server.predict("sentiment", good)[0] == 200
    over = b'{"instances": ["' + b"x" * (11 * 1024 * 1024) + b'"]}'  # over --max-body-mb 10
    got, body, _ = server.request("/v1/models/sentiment:predict", raw=over, method="POST")
    assert got == 413 and "too large (--max-body-mb" in body["error"]
    assert server.predict("sentiment", good)[0] == 200
    assert (
        server.metric("nlp_rnn_serve_errors_total", route="predict", model="sentiment", code="413")
        == 1
    )


@pytest.mark.parametrize("split_rows", [0, 4])
def test_concurrent_single_requests_share_model_calls(served_models, split_rows):
    """With --split-rows the merged batch runs as length-sorted calls of < 2 x 4 rows, and each
    request still gets its own row back."""
    texts = [f"{'not ' * (i % 3)}bad at all , {'good ' * (i % 5)}" for i in range(32)]
    expected = direct_call(served_models["sentiment"], "serving_default", {"text": texts})
    with running_server(
        [served_models["sentiment"]], batch_timeout_ms=50, split_rows=split_rows
    ) as server:
        start, results = threading.Barrier(32), [None] * 32

        def client(i):
            start.wait()
            results[i] = server.predict("sentiment", {"instances": [texts[i]]})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls = server.metric(
            "nlp_rnn_serve_batch_size_count", model="sentiment", signature="serving_default"
        )
        rows = server.metric(
            "nlp_rnn_serve_batch_size_sum", model="sentiment", signature="serving_default"
        )
        under_8 = server.metric(
            "nlp_rnn_serve_batch_size_bucket",
            model="sentiment",
            signature="serving_default",
            le="8.0",
        )
    assert [status for status, _, _ in results] == [200] * 32
    for i, (_, body, _) in enumerate(results):  # each request got its own row back
        (prediction,) = body["predictions"]
        assert prediction["label"] == expected["label"][i]
        assert np.float32(prediction["probabilities"]) == pytest.approx(
            expected["probabilities"][i], abs=1e-6
        )
    assert rows == 32
    assert calls < 32 / 2, f"{calls} model calls for 32 concurrent requests"
    if split_rows:
        assert under_8 == calls  # every call held fewer than 2 x split_rows rows


def test_rank0_inputs_split_batches_and_a_failing_merged_call_is_isolated():
    calls = []

    def model(inputs):
        calls.append({k: v.tolist() for k, v in inputs.items()})
        if b"boom" in inputs["text"].tolist():
            raise ValueError("boom")
        return {
            "echo": inputs["text"],
            "scale": np.full(len(inputs["text"]), inputs["scale"].item()),
        }

    async def scenario():
        batcher = Batcher(model, {"text": 1, "scale": 0}, 64, 0.05, None, lambda *a: None)
        requests = [
            ({"text": np.array([t], dtype=object), "scale": np.array(s)}, 1)
            for t, s in [(b"a", 1.0), (b"b", 2.0), (b"c", 1.0), (b"boom", 1.0)]
        ]
        return await asyncio.gather(*(batcher.submit(*r) for r in requests), return_exceptions=True)

    results = asyncio.run(scenario())
    assert [r["echo"].tolist() for r in results[:3]] == [[b"a"], [b"b"], [b"c"]]
    assert [r["scale"].tolist() for r in results[:3]] == [[1.0], [2.0], [1.0]]
    assert isinstance(results[3], ValueError)
    # scale 1.0 merged (a, c, boom), failed, each re-run alone; scale 2.0 in a call of its own
    assert calls[0]["text"] == [b"a", b"c", b"boom"]
    assert {tuple(c["text"]) for c in calls[1:]} == {(b"b",), (b"a",), (b"c",), (b"boom",)}


def test_split_rows_runs_a_large_batch_as_length_sorted_calls_and_answers_each_request():
    calls = []

    def model(inputs):
        calls.append(inputs["text"].tolist())
        return {"echo": inputs["text"], "length": np.array([len(t) for t in inputs["text"]])}

    texts = [b"x" * n for n in (9, 1, 7, 3, 5)]

    async def scenario(requests, split_rows):
        batcher = Batcher(model, {"text": 1}, 64, 0.2, None, lambda *a: None, split_rows=split_rows)
        return await asyncio.gather(
            *(batcher.submit({"text": np.array(r, dtype=object)}, len(r)) for r in requests)
        )

    # 5 rows >= 2 x 2: two calls, shortest texts first, each of about 5 / 2 rows
    results = asyncio.run(scenario([[t] for t in texts], split_rows=2))
    assert calls == [[b"x", b"xxx", b"xxxxx"], [b"xxxxxxx", b"xxxxxxxxx"]]
    assert [r["echo"].tolist() for r in results] == [[t] for t in texts]
    assert [r["length"].tolist() for r in results] == [[len(t)] for t in texts]
    # a request of several rows stays whole, sorted by its longest text
    calls.clear()
    results = asyncio.run(
        scenario([[texts[0], texts[1]], [texts[2]], [texts[3], texts[4]]], split_rows=2)
    )
    assert calls == [[b"xxx", b"xxxxx", b"xxxxxxx"], [b"xxxxxxxxx", b"x"]]
    assert [r["echo"].tolist() for r in results] == [texts[:2], texts[2:3], texts[3:]]
    # fewer than 2 x split_rows rows, or split_rows 0: one call in arrival order
    for split_rows in (3, 0):
        calls.clear()
        asyncio.run(scenario([[t] for t in texts], split_rows=split_rows))
        assert calls == [texts]


def test_the_batch_timeout_counts_from_when_the_model_is_free():
    """A request that queued through a whole call still waits for others once the model is
    free (TF Serving's timeout, counted from its arrival, would have run out)."""
    calls = []

    async def scenario():
        loop = asyncio.get_running_loop()
        a_running = asyncio.Event()

        def model(inputs):
            calls.append(inputs["text"].tolist())
            if inputs["text"].tolist() == [b"a"]:
                loop.call_soon_threadsafe(a_running.set)
                time.sleep(0.6)  # a call longer than the timeout
            return {"echo": inputs["text"]}

        batcher = Batcher(model, {"text": 1}, 64, 0.3, None, lambda *a: None)

        def submit(text):
            return batcher.submit({"text": np.array([text], dtype=object)}, 1)

        a = asyncio.create_task(submit(b"a"))
        await a_running.wait()
        b = asyncio.create_task(submit(b"b"))  # queues while a's call runs
        await a
        await asyncio.sleep(0.1)  # a's client answered, sends again
        c = asyncio.create_task(submit(b"c"))
        return await asyncio.gather(b, c)

    results = asyncio.run(scenario())
    assert calls == [[b"a"], [b"b", b"c"]]
    assert [r["echo"].tolist() for r in results] == [[b"b"], [b"c"]]


def test_a_version_exported_under_load_is_served_without_failed_requests(served_models, tmp_path):
    root = tmp_path / "swap"
    shutil.copytree(served_models["sentiment"] / "1", root / "1")
    with running_server([root], poll_seconds=0.5) as server:
        stop, seen, failures = threading.Event(), [], []

        def client():
            while not stop.is_set():
                status, body, headers = server.predict("swap", {"instances": ["not bad"]})
                if status != 200:
                    failures.append((status, body))
                seen.append((time.monotonic(), headers.get("x-model-version")))

        clients = [threading.Thread(target=client) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(1.0)
        copied = time.monotonic()
        shutil.copytree(served_models["sentiment"] / "1", root / "2")  # not atomic, on purpose
        while time.monotonic() - copied < 10 and not any(v == "2" for _, v in seen[-20:]):
            time.sleep(0.1)
        served_new = next((t for t, v in seen if v == "2"), None)
        # a broken version folder is logged and skipped; version 2 stays
        broken = root / "3"
        shutil.copytree(served_models["sentiment"] / "1", broken)
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        deadline = time.monotonic() + 10
        while (
            server.registry.models["swap"].status.get(3) is None
            or server.registry.models["swap"].status[3].state == "LOADING"
        ):
            assert time.monotonic() < deadline, "version 3 was never tried"
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for c in clients:
            c.join()
        status = server.request("/v1/models/swap")[1]["model_version_status"]
        after = server.predict("swap", {"instances": ["not bad"]})
    assert failures == []
    assert served_new is not None and served_new - copied < 10
    assert [(s["version"], s["state"]) for s in status] == [
        ("3", "END"),
        ("2", "AVAILABLE"),
        ("1", "END"),
    ]
    assert status[0]["status"]["error_code"] == "UNKNOWN" and status[0]["status"]["error_message"]
    assert after[0] == 200 and after[2]["x-model-version"] == "2"


def test_serve_validates_its_arguments_before_tensorflow(tmp_path):
    (tmp_path / "empty").mkdir()
    assert not cli_in_fresh_interpreter(tmp_path, [["serve", "--help"]], 0)
    assert not cli_in_fresh_interpreter(tmp_path, [["serve", "missing"]], 2, "no such folder")
    assert not cli_in_fresh_interpreter(tmp_path, [["serve", "empty"]], 2, "no models")
    assert not cli_in_fresh_interpreter(tmp_path, [["serve", "--port", "99999"]], 2, "99999")


def test_the_demo_page_names_no_task():
    """The page picks widgets by the `demo_widget` a task module exports, never by task name."""
    from nlp_rnn.serve.app import STATIC
    from nlp_rnn.tasks import TASKS

    for path in STATIC.iterdir():
        text = path.read_text()
        for name in TASKS:
            assert f'"{name}"' not in text and f"'{name}'" not in text, (path.name, name)
