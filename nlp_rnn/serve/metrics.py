"""Prometheus metrics of one server (``GET /metrics``), through prometheus-client.

Each app gets its own ``CollectorRegistry``, so several servers (tests) do not share counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("nlp_rnn_serve_requests", "HTTP requests answered",
                                ["route", "model", "code"], registry=self.registry)
        self.errors = Counter("nlp_rnn_serve_errors", "HTTP requests answered with an error "
                              "(4xx or 5xx)", ["route", "model", "code"], registry=self.registry)
        self.latency = Histogram("nlp_rnn_serve_request_latency_seconds",
                                 "Time from request to response", ["route", "model"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                                          5, 10, 30), registry=self.registry)
        self.batch_rows = Histogram("nlp_rnn_serve_batch_size", "Rows per SavedModel call "
                                    "(its _count is the number of model calls)",
                                    ["model", "signature"], buckets=ROW_BUCKETS,
                                    registry=self.registry)
        self.batch_requests = Histogram("nlp_rnn_serve_batch_requests", "Requests merged into "
                                        "one SavedModel call", ["model", "signature"],
                                        buckets=ROW_BUCKETS, registry=self.registry)

    def observe_request(self, route: str, model: str, code: int, seconds: float) -> None:
        self.requests.labels(route, model, str(code)).inc()
        if code >= 400:
            self.errors.labels(route, model, str(code)).inc()
        self.latency.labels(route, model).observe(seconds)

    def observe_batch(self, model: str, signature: str, rows: int, requests: int) -> None:
        self.batch_rows.labels(model, signature).observe(rows)
        self.batch_requests.labels(model, signature).observe(requests)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def sample_total(text: str, name: str, **labels) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``, read from
    Prometheus text ``text`` (a server's /metrics) by prometheus-client's own parser; 0 when
    there are none."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name
               and all(sample.labels.get(k) == str(v) for k, v in labels.items()))
