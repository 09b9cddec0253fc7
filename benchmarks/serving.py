"""`nlp-rnn serve` under load: concurrent HTTP clients sending single IMDB dev reviews.

Four servers run as their own processes (``python -m nlp_rnn.cli serve MODEL``), all up for
the whole section: dynamic batching as tuned for mixed-length reviews (``--max-batch-size 64
--batch-timeout-ms 5 --split-rows 16``), the batching defaults, no batching
(``--max-batch-size 1``), and no batching with 4 calls at once (``--batch-threads 4``). Each
client (a coroutine; all on one event loop) keeps one keep-alive connection and sends one
review per request, the next as soon as the answer arrives (a closed loop). The tuned and the
unbatched server get 1, 8 and 32 clients; at 32 clients every server is measured in
alternating rounds, and the 5x check is the median of the rounds' paired ratios, because this
shared machine's speed drifts by more than the effects measured. Throughput is answered
requests per second, latency the time of one request to its answer. Each point also records
the server's CPU time, the client's, and the mean rows per SavedModel call (from the server's
/metrics). The ceiling is the bare SavedModel called in this process on batches of 64 of the
same reviews. Then, with the tuned batching and 32 clients, the server's resident memory
(VmRSS) is read before and after many more requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import Check, SectionResult, median, percentile, ratio, times_str

CLIENTS = (1, 8, 32)
BATCH = 64
BATCHING, DEFAULTS, UNBATCHED, CONCURRENT = (
    "dynamic batching",
    "dynamic batching, defaults",
    "no batching",
    "no batching, 4 calls at once",
)
# (name, `nlp-rnn serve` options, client counts); the first is the one the checks judge
MODES = (
    (
        BATCHING,
        ("--max-batch-size", "64", "--batch-timeout-ms", "5", "--split-rows", "16"),
        CLIENTS,
    ),
    (DEFAULTS, ("--max-batch-size", "64"), (32,)),
    (UNBATCHED, ("--max-batch-size", "1"), CLIENTS),
    (CONCURRENT, ("--max-batch-size", "1", "--batch-threads", "4"), (32,)),
)
ROUNDS = 5  # alternating rounds of every server at 32 clients (half the point's time each)
TIMEOUT_S = 120  # one request's answer; past it the request counts as failed


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ServerProcess:
    """``nlp-rnn serve`` in a child process, on a free port."""

    def __init__(self, model_dir: Path, options: Sequence[str]):
        self.port = _free_port()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nlp_rnn.cli",
                "serve",
                str(model_dir),
                "--port",
                str(self.port),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=5
                ) as r:
                    if all(v is not None for v in json.loads(r.read())["models"].values()):
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the server did not start: " + self.process.stderr.read().decode()[-2000:]
                )
            time.sleep(0.5)

    def rss_mib(self) -> float:
        return _rss_mib(self.process.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch_totals(self) -> tuple[float, float]:
        """(rows, SavedModel calls) so far, summed over models and signatures, from /metrics."""
        from nlp_rnn.serve.metrics import sample_total

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            text = r.read().decode()
        return (
            sample_total(text, "nlp_rnn_serve_batch_size_sum"),
            sample_total(text, "nlp_rnn_serve_batch_size_count"),
        )

    def measure(self, run: Callable[[], dict]) -> dict:
        """``run()``'s result plus the server's CPU seconds, its rows and SavedModel calls, and
        the mean rows per call."""
        cpu, (rows, calls) = self.cpu_seconds(), self.batch_totals()
        result = run()
        rows_after, calls_after = self.batch_totals()
        result["server_cpu_s"] = self.cpu_seconds() - cpu
        result["rows"], result["calls"] = rows_after - rows, calls_after - calls
        result["mean_batch"] = result["rows"] / max(result["calls"], 1)
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def load(
    port: int,
    model: str,
    bodies: Sequence[bytes],
    clients: int,
    seconds: float,
    requests: int | None = None,
) -> dict:
    """Closed-loop load: ``clients`` clients, each on its own keep-alive connection, sending
    ``bodies`` round-robin for ``seconds`` (or until ``requests`` in all are answered).

    The clients are coroutines on one event loop (uvloop where installed) speaking minimal
    HTTP/1.1 over raw streams, so the load generator takes little of the CPU it shares with
    the server (less than a thread per client with ``http.client``, which also contends for
    this process's GIL).

    Returns:
        {"requests", "errors", "seconds", "throughput", "p50_ms", "p99_ms", "client_cpu_s",
        "latencies_s"} (every request's latency, in seconds).
    """
    return _run_async(_load(port, model, bodies, clients, seconds, requests))


def _run_async(coroutine):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


async def _load(
    port: int,
    model: str,
    bodies: Sequence[bytes],
    clients: int,
    seconds: float,
    requests: int | None,
) -> dict:
    head = (
        f"POST /v1/models/{model}:predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    )
    messages = [head.format(len(body)).encode() + body for body in bodies]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    budget = [requests if requests is not None else -1]
    deadline = [float("inf")]

    async def exchange(reader, writer, message: bytes) -> bool:
        writer.write(message)
        status = await reader.readline()
        length = None
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise ConnectionError(f"no Content-Length in the answer ({status!r})")
        await reader.readexactly(length)
        return status.split(b" ", 2)[1:2] == [b"200"]

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < deadline[0]:
            if requests is not None:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            message = messages[i % len(messages)]
            i += clients
            start = time.perf_counter()
            try:
                ok = await asyncio.wait_for(exchange(reader, writer, message), TIMEOUT_S)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                # (a timeout is an OSError too: TimeoutError)
                ok = False
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies[k].append(time.perf_counter() - start)
            if not ok:
                errors[k] += 1
        writer.close()

    cpu = time.process_time()
    started = time.perf_counter()
    if requests is None:
        deadline[0] = started + seconds
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - started
    flat = [x for per in latencies for x in per]
    return {
        "requests": len(flat),
        "errors": sum(errors),
        "seconds": wall,
        "throughput": len(flat) / wall,
        "p50_ms": median(flat) * 1000,
        "p99_ms": percentile(flat, 99) * 1000,
        "client_cpu_s": time.process_time() - cpu,
        "latencies_s": flat,
    }


def bare_throughput(model_dir: Path, texts: Sequence[str], reps: int, batch: int = BATCH) -> float:
    """Reviews per second of the SavedModel's serving_default on batches of ``batch``
    consecutive reviews (median call; batches of 64: the ceiling)."""
    import tensorflow as tf

    from nlp_rnn.inference import load_export, resolve_model_dir

    loaded = load_export(resolve_model_dir(str(model_dir)))
    fn = loaded.signature("serving_default")
    batches = [
        tf.constant(list(texts[i : i + batch])) for i in range(0, len(texts) - batch + 1, batch)
    ]
    for texts_in in batches[:2]:
        fn(text=texts_in)["probabilities"].numpy()
    times = []
    for rep in range(reps):
        texts_in = batches[rep % len(batches)]
        start = time.perf_counter()
        fn(text=texts_in)["probabilities"].numpy()
        times.append(time.perf_counter() - start)
    return batch / median(times)


def _pooled(parts: list[dict]) -> dict:
    """Segments of one (server, clients) point as one: summed counts and CPU, the median
    segment's throughput, latency percentiles over every request, rows per model call over
    all calls."""
    flat = [x for part in parts for x in part["latencies_s"]]
    return {
        "requests": sum(p["requests"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "throughput": median(p["throughput"] for p in parts),
        "p50_ms": median(flat) * 1000,
        "p99_ms": percentile(flat, 99) * 1000,
        "server_cpu_s": sum(p["server_cpu_s"] for p in parts),
        "client_cpu_s": sum(p["client_cpu_s"] for p in parts),
        "mean_batch": sum(p["rows"] for p in parts) / max(sum(p["calls"] for p in parts), 1),
    }


def run(
    model_dir: Path,
    texts: Sequence[str],
    seconds: float,
    memory_requests: int,
    bare_reps: int,
    log: Callable[[str], None],
    rounds: int = ROUNDS,
) -> SectionResult:
    started = time.perf_counter()
    model = Path(model_dir).name
    bodies = [json.dumps({"instances": [t]}).encode() for t in texts]
    log(f"[serving] bare SavedModel, batches of {BATCH}: {bare_reps} calls")
    ceiling = bare_throughput(model_dir, texts, bare_reps)
    # every server is up for the whole section (an idle one takes no CPU), so the 32-client
    # rounds can alternate between them: drift on this shared machine hits all of them alike
    servers: dict[str, ServerProcess] = {}
    segments: dict[tuple[str, int], list[dict]] = {}
    memory = {}
    try:
        for mode, options, _ in MODES:
            log(f"[serving] starting the server: {mode} ({' '.join(options)})")
            servers[mode] = ServerProcess(model_dir, options)
            load(servers[mode].port, model, bodies, 8, 2.0)  # warm-up
        schedule = [
            (mode, clients, seconds)
            for clients in CLIENTS
            if clients != 32
            for mode, _, counts in MODES
            if clients in counts
        ]
        schedule += [
            (mode, 32, seconds / 2)
            for _ in range(rounds)
            for mode, _, counts in MODES
            if 32 in counts
        ]
        for mode, clients, length in schedule:
            log(f"[serving] {mode}: {clients} clients for {length:.0f} s")
            server = servers[mode]
            segments.setdefault((mode, clients), []).append(
                server.measure(lambda: load(server.port, model, bodies, clients, length))  # noqa: B023 (called at once)
            )
        if memory_requests:
            server = servers[BATCHING]
            before = server.rss_mib()
            log(f"[serving] memory: {memory_requests:,} requests from 32 clients")
            result = load(server.port, model, bodies, 32, 0, requests=memory_requests)
            memory = {
                "requests": result["requests"],
                "errors": result["errors"],
                "before_mib": before,
                "after_mib": server.rss_mib(),
                "seconds": result["seconds"],
                "throughput": result["throughput"],
            }
    finally:
        for server in servers.values():
            server.stop()
    by = {point: _pooled(parts) for point, parts in segments.items()}
    rows = []
    for mode, options, counts in MODES:
        for clients in counts:
            result = by[(mode, clients)]
            per_request = 1000 / max(result["requests"], 1)
            rates = [part["throughput"] for part in segments[(mode, clients)]]
            rows.append(
                {
                    "server": f"{mode} ({' '.join(options)})",
                    "clients": clients,
                    "requests": result["requests"],
                    "errors": result["errors"],
                    "reviews/s": result["throughput"],
                    "range": f"{min(rates):.0f}–{max(rates):.0f}" if len(rates) > 1 else "",
                    "p50 ms": result["p50_ms"],
                    "p99 ms": result["p99_ms"],
                    "÷ bare batch-64": f"{result['throughput'] / ceiling:.0%}",
                    "mean batch": result["mean_batch"],
                    "server CPU ms/req": result["server_cpu_s"] * per_request,
                    "client CPU ms/req": result["client_cpu_s"] * per_request,
                }
            )
    top = by[(BATCHING, 32)]
    unbatched = by[(UNBATCHED, 32)]
    # the bare model at the batch sizes the servers actually formed: what each would reach
    # with no cost besides the model
    bare = {BATCH: ceiling}
    for size in sorted({1, max(1, round(top["mean_batch"]))} - {BATCH}):
        log(f"[serving] bare SavedModel, batches of {size}: {bare_reps} calls")
        bare[size] = bare_throughput(model_dir, texts, max(bare_reps, 3 * 64 // size), size)
    for size, rate in sorted(bare.items(), reverse=True):
        what = (
            "ceiling"
            if size == BATCH
            else "the unbatched server's calls"
            if size == 1
            else "about the batching server's mean"
        )
        rows.append(
            {
                "server": f"bare SavedModel, batches of {size} ({what})",
                "clients": "–",
                "requests": "",
                "errors": "",
                "reviews/s": rate,
                "range": "",
                "p50 ms": "",
                "p99 ms": "",
                "÷ bare batch-64": f"{rate / ceiling:.0%}",
                "mean batch": size,
                "server CPU ms/req": "",
                "client CPU ms/req": "",
            }
        )
    vs_ceiling = ratio(top["throughput"], ceiling)
    # paired: each round's batching server over the same round's unbatched one
    paired = [
        ratio(b["throughput"], u["throughput"])
        for b, u in zip(segments[(BATCHING, 32)], segments[(UNBATCHED, 32)])
    ]
    vs_unbatched = median(paired)
    spread = f" (rounds: {min(paired):.2f}–{max(paired):.2f}×)" if len(paired) > 1 else ""
    errors = sum(r["errors"] for r in by.values()) + memory.get("errors", 0)
    checks = [
        Check(
            "32 clients, dynamic batching: throughput ÷ bare SavedModel batch-64",
            f"{vs_ceiling:.0%}",
            "≥ 70%",
            vs_ceiling >= 0.7,
        ),
        Check(
            f"32 clients: dynamic batching ÷ no batching, median of {len(paired)} paired rounds",
            times_str(vs_unbatched) + spread,
            "≥ 5×",
            vs_unbatched >= 5,
        ),
        Check("failed requests (all runs)", str(errors), "0", errors == 0),
    ]
    tables = [("Served throughput and latency (single reviews per request)", rows)]
    if memory:
        growth = memory["after_mib"] - memory["before_mib"]
        tables.append(
            (
                "Server memory (VmRSS), dynamic batching, 32 clients",
                [
                    {
                        "requests": memory["requests"],
                        "errors": memory["errors"],
                        "RSS before MiB": memory["before_mib"],
                        "RSS after MiB": memory["after_mib"],
                        "growth MiB": growth,
                        "reviews/s": memory["throughput"],
                    }
                ],
            )
        )
        checks.append(
            Check(
                f"server memory over {memory['requests']:,} requests",
                f"{memory['before_mib']:.0f} → {memory['after_mib']:.0f} MiB",
                "flat (growth < 10%)",
                growth < 0.1 * memory["before_mib"],
            )
        )
    measures = (
        f'Each client sends one IMDB dev review per request (`{{"instances": '
        f"[review]}}`, {len(texts)} reviews round-robin) over its own keep-alive connection, "
        "the next as soon as the answer arrives; the clients are coroutines on one event loop "
        "in the benchmark's process, and the servers (`nlp-rnn serve`, each its own process, "
        "all up for the whole section; an idle one takes no CPU) share this machine's cores "
        f"with them. With 1 and 8 clients each server gets one {seconds:.0f} s point; with 32, "
        f"{len(paired)} rounds in which every server gets {seconds / 2:.0f} s in turn, so the "
        "machine's drift hits all of them alike: reviews/s is the median round (range beside "
        "it), the 5× check the median of the rounds' batching ÷ no-batching ratios. "
        "The server's options are in its row: the batching defaults take whatever queued "
        "while the model ran; `--batch-timeout-ms 5 --split-rows 16` lets a batch wait 5 ms "
        "after a call for the clients that call answered, then runs it as calls of about 16 "
        "reviews of similar length (less padding). `--batch-threads 4` without batching runs "
        "up to 4 single-review calls at once, as TF Serving does without its batcher "
        "(shown for comparison; the checks use the serial unbatched server). "
        "Latency is one request's wall time at the client (percentiles over all of a point's "
        "requests); mean batch is rows per SavedModel "
        "call (the server's /metrics); CPU ms/req is process CPU time (all threads) over "
        "answered requests. The ceiling is the bare "
        f"SavedModel's `serving_default` on batches of {BATCH} of the same reviews in this "
        "process (median of the calls). That ceiling is "
        f"{times_str(ratio(ceiling, unbatched['throughput']))} the unbatched server's 32-client "
        "throughput: the ratio a server batching 64 at a time at no HTTP cost would reach. "
        "The bare rows at smaller batches (the same consecutive reviews) show what the model "
        "itself gives at the batch sizes the servers formed."
    )
    return SectionResult(
        "serving",
        "Serving: `nlp-rnn serve` under concurrent load",
        measures,
        tables=tables,
        checks=checks,
        seconds=time.perf_counter() - started,
        raw={
            "ceiling": ceiling,
            "bare": {str(k): v for k, v in bare.items()},
            "runs": {f"{m}|{c}": r for (m, c), r in by.items()},
            "segments": {
                f"{m}|{c}": [
                    {k: v for k, v in part.items() if k != "latencies_s"} for part in parts
                ]
                for (m, c), parts in segments.items()
            },
            "memory": memory,
        },
    )
