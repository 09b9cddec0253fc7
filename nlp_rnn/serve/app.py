"""The ASGI app of ``nlp-rnn serve`` (Starlette on uvicorn).

Routes:

* TF Serving's REST API: ``GET /v1/models/{name}[/versions/{v}]`` (model_version_status),
  ``GET .../metadata`` (model_spec + signature_def), ``POST .../{name}[/versions/{v}]:predict``
  (row and columnar form, see ``rest.py``); errors are ``{"error": "..."}`` with 400, 404 or 413.
* ``GET /healthz``, ``GET /metrics`` (Prometheus text format).
* ``GET /`` and ``GET /demo/{name}``: the demo page (``static/``), which reads
  ``GET /nlp-rnn/models`` (each model's nlp-rnn metadata, demo widget and signatures) and
  predicts through the same REST API.

The server itself knows nothing about tasks: a response is the signature's outputs, and the
page picks its widget from the ``demo_widget`` a task module wrote into the export's metadata.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nlp_rnn.serve.batcher import Batcher
from nlp_rnn.serve.metrics import ServerMetrics
from nlp_rnn.serve.registry import ModelVersion, Registry
from nlp_rnn.serve.rest import BadRequest, format_predict, parse_predict, signature_def

STATIC = Path(__file__).parent / "static"
DRAIN_FACTOR = 8
log = logging.getLogger("nlp_rnn.serve")
_MODEL_PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                         r"(?P<tail>/metadata|:[A-Za-z]+)?$")


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class ServeApp:
    """The server's state (registry, batchers, metrics) and its route handlers."""

    def __init__(self, registry: Registry, max_batch_size: int = 64,
                 batch_timeout_ms: float = 0.0, max_body_mb: float = 10.0,
                 batch_threads: int = 1, split_rows: int = 0):
        self.registry = registry
        self.max_batch_size, self.batch_timeout_s = max_batch_size, batch_timeout_ms / 1000
        self.max_body_bytes = int(max_body_mb * 1024 * 1024)
        self.batch_threads, self.split_rows = batch_threads, split_rows
        self.metrics = ServerMetrics()
        # model calls run here, never on the event loop; TensorFlow parallelises inside a call
        self.executor = ThreadPoolExecutor(max_workers=max(4, batch_threads * 2),
                                           thread_name_prefix="nlp-rnn-model")
        self.app = Starlette(routes=[
            Route("/", self.index), Route("/demo/{name}", self.index),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/healthz", self.healthz), Route("/metrics", self.prometheus),
            Route("/nlp-rnn/models", self.models),
            Route("/v1/models/{path:path}", self.tf_serving, methods=["GET", "POST"]),
        ], lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        yield
        self.executor.shutdown(wait=False)

    # ---- the demo page and housekeeping -----------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": {
            name: model.current.version if model.current else None
            for name, model in self.registry.models.items()}})

    async def prometheus(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    async def models(self, request: Request) -> Response:
        """What the demo page needs: per model its served version, nlp-rnn metadata (with the
        task's ``demo_widget``) and signatures."""
        listing = []
        for name, model in sorted(self.registry.models.items()):
            current = model.current
            entry = {"name": name, "version": current.version if current else None}
            if current is not None:
                entry["metadata"] = current.metadata
                entry["signatures"] = {
                    key: {"inputs": {n: {"dtype": i.dtype, "shape": list(i.shape)}
                                     for n, i in sig.inputs.items()},
                          "outputs": sorted(sig.outputs)}
                    for key, sig in current.signatures.items()}
            listing.append(entry)
        return JSONResponse({"models": listing})

    # ---- TF Serving's REST API --------------------------------------------------------------

    async def tf_serving(self, request: Request) -> Response:
        started = time.perf_counter()
        match = _MODEL_PATH.match(request.path_params["path"])
        name = match["name"] if match else ""
        route = "other"
        if match:
            tail = match["tail"] or ""
            route = {"": "status", "/metadata": "metadata"}.get(tail, tail.lstrip(":"))
        try:
            if match is None:
                raise BadRequest("Malformed request: expected /v1/models/NAME[/versions/N]"
                                 "[/metadata|:predict]", 404)
            model = self.registry.models.get(name)
            if model is None:
                name = ""  # no metrics label per unknown name a client makes up
                raise BadRequest(f"Servable not found for request: Latest({match['name']})", 404)
            version = match["version"]
            if version is not None and not version.isdigit():
                raise BadRequest(f"Malformed request: version {version!r} is not a number", 404)
            if route == "status":
                if request.method != "GET":
                    raise BadRequest("model status is a GET", 405)
                response = self._status(model, None if version is None else int(version))
            elif route == "metadata":
                if request.method != "GET":
                    raise BadRequest("metadata is a GET", 405)
                response = JSONResponse(self._metadata(self._version(model, version)))
            elif route == "predict":
                if request.method != "POST":
                    raise BadRequest(":predict is a POST", 405)
                response = await self._predict(request, self._version(model, version))
            else:
                raise BadRequest(f"Malformed request: {route!r} is not supported here (only "
                                 ":predict)", 404 if route == "other" else 400)
        except BadRequest as exc:
            response = _error(str(exc), exc.status)
        except Exception as exc:  # noqa: BLE001 - a broken request must never stop the server
            if type(exc).__name__ == "InvalidArgumentError":  # TensorFlow rejected a value
                message = getattr(exc, "message", str(exc)).strip().splitlines()
                response = _error(message[0] if message else "invalid argument", 400)
            else:
                log.exception("request %s %s failed", request.method, request.url.path)
                response = _error(f"{type(exc).__name__}: {exc}"[:1000], 500)
        self.metrics.observe_request(route, name, response.status_code,
                                     time.perf_counter() - started)
        return response

    def _version(self, model, version: str | None) -> ModelVersion:
        current = model.current
        if current is None:
            raise BadRequest(f"Servable not found for request: Latest({model.name}) (no version "
                             "of it loaded yet)", 404)
        if version is not None and int(version) != current.version:
            raise BadRequest(f"Servable not found for request: Specific({model.name}, {version}) "
                             f"(serving version {current.version})", 404)
        return current

    def _status(self, model, version: int | None) -> Response:
        statuses = sorted(model.status.items(), reverse=True)
        if version is not None:
            statuses = [(v, s) for v, s in statuses if v == version]
            if not statuses:
                raise BadRequest(f"Could not find version {version} of model {model.name}", 404)
        if not statuses:
            raise BadRequest(f"Could not find any versions of model {model.name}", 404)
        return JSONResponse({"model_version_status": [
            {"version": str(v), "state": s.state,
             "status": {"error_code": "UNKNOWN" if s.error else "OK",
                        "error_message": s.error}} for v, s in statuses]})

    def _metadata(self, current: ModelVersion) -> dict:
        return {"model_spec": {"name": current.name, "signature_name": "",
                               "version": str(current.version)},
                "metadata": {"signature_def": {
                    "signature_def": {key: signature_def(sig)
                                      for key, sig in current.signatures.items()},
                    "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap"}}}

    async def _read_body(self, request: Request) -> bytes:
        """The body, or BadRequest 413 past --max-body-mb. An oversized body is still read (and
        dropped) up to ``DRAIN_FACTOR`` times the limit, so the client, still sending, gets the
        413 instead of a broken pipe; only a larger one has its connection cut."""
        declared = request.headers.get("content-length")
        too_large = f"(--max-body-mb: {self.max_body_bytes} bytes at most)"
        if declared and declared.isdigit() and \
                int(declared) > DRAIN_FACTOR * self.max_body_bytes:
            raise BadRequest(f"request body of {int(declared)} bytes is too large {too_large}",
                             413)
        chunks, size = [], 0
        async for chunk in request.stream():  # a body without Content-Length is capped too
            size += len(chunk)
            if size > DRAIN_FACTOR * self.max_body_bytes:
                break
            if size <= self.max_body_bytes:
                chunks.append(chunk)
        if size > self.max_body_bytes:
            raise BadRequest(f"request body is too large {too_large}", 413)
        return b"".join(chunks)

    async def _predict(self, request: Request, current: ModelVersion) -> Response:
        body = await self._read_body(request)
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        signature, inputs, rows, form = parse_predict(decoded, current.signatures)
        outputs = await self._batcher(current, signature).submit(inputs, rows)
        return JSONResponse(format_predict(outputs, form),
                            headers={"X-Model-Version": str(current.version)})

    def _batcher(self, current: ModelVersion, signature) -> Batcher:
        batcher = current.batchers.get(signature.name)
        if batcher is None:
            def on_batch(rows: int, requests: int, model=current.name, key=signature.name):
                self.metrics.observe_batch(model, key, rows, requests)

            batcher = Batcher(signature, {n: i.rank for n, i in signature.inputs.items()},
                              self.max_batch_size, self.batch_timeout_s, self.executor,
                              on_batch, concurrency=self.batch_threads,
                              split_rows=self.split_rows)
            current.batchers[signature.name] = batcher
        return batcher


def serve(model_dirs: list[str], host: str = "127.0.0.1", port: int = 8501,
          max_batch_size: int = 64, batch_timeout_ms: float = 0.0, max_body_mb: float = 10.0,
          batch_threads: int = 1, poll_seconds: float = 1.0, log=print,
          split_rows: int = 0) -> None:
    """Serve the newest version of every model under ``model_dirs`` until interrupted."""
    import uvicorn

    from nlp_rnn.serve.registry import find_models

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    registry = Registry(find_models(model_dirs), poll_seconds)
    registry.start()
    server = ServeApp(registry, max_batch_size, batch_timeout_ms, max_body_mb, batch_threads,
                      split_rows)
    for name, model in registry.models.items():
        served = f"version {model.current.version}" if model.current else "no version yet"
        log(f"model {name}: {served} ({model.root})")
    log(f"serving on http://{host}:{port}/  (TF Serving REST API under /v1/models; demo page "
        "at /; Ctrl-C stops)")
    try:
        uvicorn.run(server.app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        registry.stop()
