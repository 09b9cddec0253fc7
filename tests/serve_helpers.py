"""A real ``nlp-rnn serve`` (uvicorn on 127.0.0.1, a free port) in a thread, an HTTP client, and
the served SavedModels' own answers, for the serve test files."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import uvicorn

from nlp_rnn.serve.app import ServeApp
from nlp_rnn.serve.metrics import sample_total
from nlp_rnn.serve.registry import Registry, find_models

# a sentence the demo page's tagger test types, and the API test sends
NER_TEXT = "Peter Miller will fly to Paris to meet Anna Schmidt next week ."


def _lower(headers) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    app: ServeApp
    registry: Registry

    def request(
        self,
        path: str,
        body=None,
        method: str | None = None,
        raw: bytes | None = None,
        timeout: float = 60,
    ) -> tuple[int, dict, dict]:
        """(status, decoded JSON body, headers with lower-case names); ``raw`` sends bytes as
        they are."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, json.loads(response.read()), _lower(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), _lower(error.headers)

    def predict(self, model: str, body: dict, version: int | None = None):
        path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
        return self.request(path, body)

    def metric(self, name: str, **labels) -> float:
        """The sum of the /metrics samples called ``name`` with these labels (0 when absent)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as response:
            return sample_total(response.read().decode(), name, **labels)


@contextlib.contextmanager
def running_server(model_dirs: list, poll_seconds: float = 0.5, **options):
    """Load the models, serve them on a free port, yield a ``Server``; stop on exit."""
    registry = Registry(find_models([str(d) for d in model_dirs]), poll_seconds)
    registry.start()
    app = ServeApp(registry, **options)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", app, registry)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        registry.stop()


@functools.cache
def _loaded(version_dir: str):
    return tf.saved_model.load(version_dir)


def direct_call(model_dir, signature: str, inputs: dict) -> dict:
    """The SavedModel's own outputs (numpy; strings decoded) for columnar ``inputs``."""
    fn = _loaded(str(model_dir / "1")).signatures[signature]
    specs = fn.structured_input_signature[1]
    out = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
    return {
        k: np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(v.numpy())
        if v.dtype == tf.string
        else v.numpy()
        for k, v in out.items()
    }
