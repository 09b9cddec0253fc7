"""``nlp-rnn serve``: TF Serving's REST API over exported SavedModels, with dynamic batching,
version polling, Prometheus metrics and a demo page.

    app.py       the Starlette app and ``serve()`` (uvicorn)
    registry.py  model folders -> the newest complete version, polled and swapped in
    batcher.py   merges concurrent requests into one SavedModel call
    rest.py      TF Serving's JSON request/response shapes (no TensorFlow)
    metrics.py   prometheus-client counters and histograms
    static/      the demo page (HTML/JS/CSS, no CDN)

Nothing here imports TensorFlow at module level; loading a model does.
"""
