"""driftline benchmark suite: `python -m bench` (or `make bench`).

Runs every measurement of the performance issue against servers it starts itself,
prints one table (metric, value, reference, ratio, target, pass/fail) with the machine
it ran on, and writes bench/results/latest.json (everything measured) and
bench/results/latest.md (the table, for the docs). Ratios compare figures measured in
the same run on the same machine. Not part of the test suite.

Steps (all by default, or pick with --only):
  framework  1. minimal aiohttp + msgspec app: the framework limit (wrk)
  embedded   2. POST /monitor/predict, embedded store (wrk)
  prediction    predict on new paths (prediction; prediction + id; versions) vs plain
  latency    7. p99 of /monitor/predict at 50% of the embedded maximum (open loop)
  batch      4. /monitor/batch and NDJSON ingestion, feature values/s
  cloudevents   KServe logger CloudEvents (request + response per inference) vs /monitor/batch
  redis      3+5. predict with Redis, durable and async; Redis commands/event, CPU; Redis
             busy under a writer process (bench/rediscapacity.py)
  memory     5. Redis memory after 1M and 10M events (same window)
  peers      6. Evidently and whylogs vs driftline on 100,000 x 20 frames
  compare    6. `driftline compare` vs Evidently's DataDriftPreset on the same files
  micro      per-call cost of the service's steps, in process (where the time goes)
  labels     delayed labels joined and counted per second, in process, batches of 5,000
  client     driftline.client: log() cost to the caller, feature values/s to one service
  fleet      13. 1,000 monitors x 50 features in one replica with Redis: memory, start-up, spread
  scaleout   13. 1, 2 and 3 replicas on one Redis, and on a 3-master Redis Cluster: events/s,
             Redis CPU and bytes per event
  operator   13. the operator rendering 1,000 DriftMonitors on a real API server (envtest)

With --profile, py-spy samples the server during extra load runs (never the measured
ones) and bench/results/profile-*.txt say where its time goes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import msgspec.yaml

from . import data, ingest, load, procs, profiling
from .quantity import quantity

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = (
    "framework",
    "embedded",
    "prediction",
    "latency",
    "batch",
    "cloudevents",
    "redis",
    "memory",
    "peers",
    "compare",
    "micro",
    "labels",
    "client",
    "fleet",
    "scaleout",
    "operator",
)
ROUND_SECONDS = 1.0  # one round of the prediction step, per service (see step_prediction)
SCALE_OUT = (1, 2, 3)  # replicas on one Redis in the scale-out step
CLUSTER_MASTERS = 3  # the Redis Cluster of the scale-out step
CLUSTER_MONITORS = 12  # fleet monitors whose windows spread over its masters
CLUSTER_REPLICAS = 3  # replicas on it, and on one Redis for the reference
FLEET_MONITORS = 1000  # monitors of 50 features in the fleet step (--quick: 100)
FLEET_HISTORY_SECONDS = 3600  # the fleet's history horizon (see step_fleet)
FEATURES = len(data.FEATURES)
# Rows per logged inference: one (an online request) and a batched one.
INFERENCE_ROWS = (1, 32)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", default=",".join(STEPS), help="comma-separated steps to run")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured load run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    p.add_argument("--connections", type=int, default=64, help="wrk connections")
    p.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="measured runs per figure: a ratio is the mean of (framework, service) pairs "
        "run back to back; a plain throughput or latency figure is the fastest run",
    )
    p.add_argument(
        "--redis-events",
        type=int,
        default=10_000_000,
        help="events for the Redis memory check (memory read at 10%% and 100%%)",
    )
    p.add_argument("--peer-rows", type=int, default=100_000, help="rows per peer frame")
    p.add_argument("--batch-size", type=int, default=5000, help="events per batch request")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also sample the server with py-spy under load (embedded, redis durable)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 3 s loads, 1M Redis events, 20k peer rows"
    )
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeat = 3.0, 1.0, 1
        args.redis_events = min(args.redis_events, 1_000_000)
        args.peer_rows = min(args.peer_rows, 20_000)
    args.steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.steps) - set(STEPS)
    if unknown:
        p.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    return args


class Bench:
    """State shared by the steps of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
        self.logs = self.work / "logs"
        self.m: dict[str, Any] = {}  # measurements, by step
        self.errors: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.redis: procs.Redis | None = None
        self.framework_server: procs.Server | None = None
        self.profiles: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        """Progress line on stderr."""
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def prepare(self) -> None:
        """Monitor config, baseline profile and request bodies."""
        if not load.have_wrk():
            self.say("wrk not found: install it (apt-get install -y wrk); load steps will fail")
        t0 = time.perf_counter()
        reference = data.frame(100_000, seed=1)
        self.monitors = data.write_monitor(self.work / "service", reference)
        self.predict_file = self.work / "predict.txt"
        self.predict_file.write_bytes(b"\n".join(data.predict_bodies(4000)) + b"\n")
        # The same events, with the model's score, to a monitor that declares it.
        self.scored_monitors = data.write_monitor(self.work / "scored", reference, scored=True)
        self.scored_file = self.work / "predict-scored.txt"
        self.scored_file.write_bytes(b"\n".join(data.predict_bodies(4000, scored=True)) + b"\n")
        # With ids too, to a monitor that keeps each prediction for its label.
        self.labelled_monitors = data.write_monitor(
            self.work / "labelled", reference, scored=True, labelled=True
        )
        self.labelled_file = self.work / "predict-labelled.txt"
        self.labelled_file.write_bytes(
            b"\n".join(data.predict_bodies(4000, scored=True, ids=True)) + b"\n"
        )
        # The plain bodies to a monitor with windows per declared version and segment.
        self.scoped_monitors = data.write_monitor(self.work / "scoped", reference, scoped=True)
        self.say(f"data ready in {time.perf_counter() - t0:.1f} s ({self.work})")

    def get_redis(self) -> procs.Redis:
        """The run's redis-server, started on first use."""
        if self.redis is None:
            self.redis = procs.Redis(self.logs)
        return self.redis

    def framework(self) -> procs.Server:
        """The framework-limit app, started once and kept (idle) for paired runs."""
        if self.framework_server is None:
            self.framework_server = procs.start_framework(self.logs)
            load.wrk(
                self.framework_server,
                self.predict_file,
                duration=self.args.warmup,
                connections=self.args.connections,
            )
        return self.framework_server

    def paired(
        self,
        server: procs.Server,
        label: str,
        repeat: int | None = None,
        run: Callable[[], tuple[load.LoadResult, dict[str, Any]]] | None = None,
        connections: int | None = None,
        framework: procs.Server | None = None,
    ) -> dict[str, Any]:
        """Service maximum throughput, each run right after a framework-limit run.

        This machine's speed drifts by tens of percent within a minute (shared host), so
        a ratio is only fair between runs seconds apart: each pair is (framework run,
        service run) back to back, and the ratio is the mean of the pairs' ratios.
        Returns the service's best run, its extra data, and the pairs. `connections`:
        wrk's for both runs (default --connections). `framework`: the framework app to
        pair with (default the run's, on the service's default event loop).
        """
        a = self.args
        width = connections or a.connections

        def default() -> tuple[load.LoadResult, dict[str, Any]]:
            r = load.wrk(server, self.predict_file, duration=a.duration, connections=width)
            return r, {}

        run = run or default
        load.wrk(server, self.predict_file, duration=a.warmup, connections=width)
        pairs = []
        for _ in range(repeat or a.repeat):
            fw = load.wrk(
                framework or self.framework(),
                self.predict_file,
                duration=a.duration,
                connections=width,
            )
            svc, extra = run()
            pairs.append((fw, svc, extra))
        _, best, extra = max(pairs, key=lambda p: p[1].rps)
        ratios = [svc.rps / fw.rps for fw, svc, _ in pairs]
        out = best.as_dict() | extra
        out["pairs"] = [
            {"framework_rps": round(fw.rps, 1), "rps": round(svc.rps, 1), "ratio": round(r, 4)}
            for (fw, svc, _), r in zip(pairs, ratios, strict=True)
        ]
        out["mean_rps"] = sum(svc.rps for _, svc, _ in pairs) / len(pairs)
        out["mean_framework_rps"] = sum(fw.rps for fw, _, _ in pairs) / len(pairs)
        out["ratio"] = sum(ratios) / len(ratios)
        self.say(
            f"{label}: {out['mean_rps']:,.0f} req/s vs framework {out['mean_framework_rps']:,.0f}"
            f" in the same pairs (ratio {out['ratio']:.3f}; pairs {out['pairs']}); best run "
            f"p50 {best.p50_ms:.2f} ms, p99 {best.p99_ms:.2f} ms, errors {best.errors}, "
            f"server CPU {best.server_cpu:.0%}, wrk CPU {best.generator_cpu:.0%}"
        )
        return out

    def max_load(
        self, server: procs.Server, label: str, repeat: int | None = None
    ) -> load.LoadResult:
        """Wrk warm-up (discarded), then `repeat` measured runs; the best is kept.

        Best of several, for the framework and the service alike: a neighbour's burst
        on this shared machine can only lower a run, never raise it.
        """
        a = self.args
        load.wrk(server, self.predict_file, duration=a.warmup, connections=a.connections)
        runs = [
            load.wrk(server, self.predict_file, duration=a.duration, connections=a.connections)
            for _ in range(repeat or a.repeat)
        ]
        result = max(runs, key=lambda r: r.rps)
        result.runs_rps = [round(r.rps, 1) for r in runs]
        self.say(
            f"{label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, errors {result.errors}, "
            f"server CPU {result.server_cpu:.0%}, wrk CPU {result.generator_cpu:.0%}"
        )
        return result

    def profile(
        self, server: procs.Server, name: str, workload: Callable[[float], Any] | None = None
    ) -> None:
        """py-spy on the server during an extra load run (never the measured one)."""
        if not self.args.profile:
            return
        duration = max(self.args.duration, 5.0)
        out = RESULTS / f"profile-{name}.txt"
        raw = self.work / f"profile-{name}.collapsed"
        spy = profiling.start(server.pid, duration, raw)
        time.sleep(0.5)
        if workload is None:
            load.wrk(
                server, self.predict_file, duration=duration, connections=self.args.connections
            )
        else:
            workload(duration)
        _, err = spy.communicate(timeout=duration + 30)
        if spy.returncode != 0 or not raw.exists():
            self.errors[f"profile-{name}"] = err.decode(errors="replace")[-2000:]
            return
        summary = profiling.summarize(raw)
        self.profiles[name] = summary
        RESULTS.mkdir(parents=True, exist_ok=True)
        out.write_text(profiling.render(f"driftline serve, {name}, under wrk", summary))
        self.say(f"profile of {name}: {out}")

    # -------------------------------------------------------------------- steps

    def step_framework(self) -> None:
        """1. The framework limit."""
        result = self.max_load(self.framework(), "framework limit")
        self.m["framework"] = result.as_dict()

    def step_embedded(self) -> None:
        """2. Predict on the embedded store (and the flush-interval ablation)."""
        with procs.running(
            procs.start_driftline("driftline-embedded", self.monitors, self.logs)
        ) as server:
            self.m["embedded"] = self.paired(server, "predict, embedded")
            # Issue 13 asks the ratio at 32 connections too: flushes half as large.
            self.m["embedded_c32"] = self.paired(
                server, "predict, embedded, 32 connections", repeat=1, connections=32
            )
            self.profile(server, "embedded")
        # Ablation: the same with DRIFTLINE_FLUSH_INTERVAL=0. Durable requests wait for
        # the flush, so the flusher's 2 ms gathering time leaves an in-process store idle.
        with procs.running(
            procs.start_driftline(
                "driftline-embedded-flush0",
                self.monitors,
                self.logs,
                extra_env={"DRIFTLINE_FLUSH_INTERVAL": "0"},
            )
        ) as server:
            self.m["embedded_flush0"] = self.paired(
                server, "predict, embedded, DRIFTLINE_FLUSH_INTERVAL=0", repeat=1
            )
        # Ablation: asyncio's own event loop for the service and the framework alike, to
        # show what uvloop (the default, driftline.eventloop) is worth on either side.
        with (
            procs.running(procs.start_framework(self.logs, "asyncio")) as framework,
            procs.running(
                procs.start_driftline(
                    "driftline-embedded-asyncio",
                    self.monitors,
                    self.logs,
                    extra_env={"DRIFTLINE_EVENT_LOOP": "asyncio"},
                )
            ) as server,
        ):
            self.m["embedded_asyncio"] = self.paired(
                server,
                "predict, embedded, DRIFTLINE_EVENT_LOOP=asyncio",
                repeat=1,
                framework=framework,
            )
        # History recording is on by default (the runs above); the same with it off says
        # what writing each monitor's closing verdict per bucket costs the predict path.
        with procs.running(
            procs.start_driftline(
                "driftline-embedded-history0",
                self.monitors,
                self.logs,
                extra_env={"DRIFTLINE_HISTORY_HORIZON": "0"},
            )
        ) as server:
            self.m["embedded_no_history"] = self.paired(
                server, "predict, embedded, DRIFTLINE_HISTORY_HORIZON=0"
            )

    def step_prediction(self) -> None:
        """Predict on each new path against plain predict, in back-to-back rounds.

        Embedded services: today's monitor (features only); the same monitor declaring a
        score prediction (bodies with `prediction`); one that also takes labels (bodies
        with `prediction` and `id`: each prediction is kept for its label); and one with
        windows per declared version and segment (the plain bodies). Each round runs
        every service in turn for one second, in reverse order every other round; the
        step spends what `--repeat` runs of `--duration` would, in as many rounds. A
        ratio is the median of the rounds' ratios: single seconds on a shared host swing
        0.6-1.2x, and a median of many short pairs is steadier than a mean of a few
        long ones.
        """
        a = self.args
        seconds = min(ROUND_SECONDS, a.duration)
        repeat = max(a.repeat, round(a.duration * a.repeat / seconds))
        variants = (
            ("plain", self.monitors, self.predict_file),
            ("prediction", self.scored_monitors, self.scored_file),
            ("labels", self.labelled_monitors, self.labelled_file),
            ("versions", self.scoped_monitors, self.predict_file),
        )
        with contextlib.ExitStack() as stack:
            servers = [
                (
                    key,
                    stack.enter_context(
                        procs.running(procs.start_driftline(f"driftline-{key}", d, self.logs))
                    ),
                    bodies,
                )
                for key, d, bodies in variants
            ]
            for _, server, bodies in servers:
                load.wrk(server, bodies, duration=a.warmup, connections=a.connections)
            # Every other round runs the services in reverse order: a machine that slows
            # down (or speeds up) during a round weighs on every path alike.
            rounds = [
                {
                    key: load.wrk(server, bodies, duration=seconds, connections=a.connections)
                    for key, server, bodies in (servers if r % 2 == 0 else servers[::-1])
                }
                for r in range(repeat)
            ]
        for key, _, _ in variants[1:]:
            pairs = [(r["plain"], r[key]) for r in rounds]
            ratios = [w.rps / wo.rps for wo, w in pairs]
            out = {
                "pairs": [
                    {
                        "without_rps": round(wo.rps, 1),
                        "with_rps": round(w.rps, 1),
                        # Near 1.0 the server set the pace; the generator's share says
                        # whether it kept up (ids are made per request, bench/bodies.lua).
                        "server_cpu": (round(wo.server_cpu, 2), round(w.server_cpu, 2)),
                        "generator_cpu": (round(wo.generator_cpu, 2), round(w.generator_cpu, 2)),
                    }
                    for wo, w in pairs
                ],
                "mean_without_rps": sum(wo.rps for wo, _ in pairs) / len(pairs),
                "mean_with_rps": sum(w.rps for _, w in pairs) / len(pairs),
                "errors": sum(wo.errors + w.errors for wo, w in pairs),
                "ratio": statistics.median(ratios),
                "mean_ratio": sum(ratios) / len(ratios),
            }
            self.m["prediction" if key == "prediction" else f"predict_{key}"] = out
            self.say(
                f"predict, {key}: {out['mean_with_rps']:,.0f} req/s vs "
                f"{out['mean_without_rps']:,.0f} plain (ratio {out['ratio']:.3f}; pairs "
                f"{out['pairs']}; errors {out['errors']})"
            )

    def _latency(self, server: procs.Server, key: str, max_rps: float) -> None:
        """Open loop at half `max_rps`, then the framework app at the same rate.

        The framework's figures are the floor this host and generator put under any
        service at that rate (a Python generator on a shared core): the row shows them.
        """
        rate = max(1.0, 0.5 * max_rps)

        def run(target: procs.Server) -> load.LoadResult:
            return load.open_loop(
                target,
                self.predict_file,
                rate=rate,
                duration=self.args.duration,
                warmup=min(self.args.warmup, 2.0),
                connections=self.args.connections,
            )

        result = run(server)
        with procs.running(procs.start_framework(self.logs)) as framework:
            floor = run(framework)
        self.m[key] = result.as_dict() | {"framework": floor.as_dict()}
        self.say(
            f"{key}: {result.rps:,.0f} of {rate:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, p99.9 {result.p999_ms:.2f} ms, errors {result.errors}; "
            f"framework at that rate p50 {floor.p50_ms:.2f} ms, p99 {floor.p99_ms:.2f} ms"
        )

    def step_latency(self) -> None:
        """7. Open-loop latency at half the embedded maximum."""
        if "embedded" not in self.m:
            raise RuntimeError("needs the embedded step's maximum rate")
        with procs.running(
            procs.start_driftline("driftline-latency", self.monitors, self.logs)
        ) as server:
            self._latency(server, "latency_embedded", self.m["embedded"]["mean_rps"])

    def step_batch(self) -> None:
        """4. Batch and NDJSON ingestion on the embedded store."""
        events = data.rows(data.frame(20_000, seed=3))
        size = self.args.batch_size
        with procs.running(
            procs.start_driftline("driftline-batch", self.monitors, self.logs)
        ) as server:
            for key, ndjson, path, ctype in (
                ("batch", False, "/monitor/batch", "application/json"),
                ("ndjson", True, f"/v1/monitors/{data.MONITOR}/events", "application/x-ndjson"),
            ):
                bodies = data.event_bodies(events, size, ndjson=ndjson)
                requests = ingest.prepare(server, bodies, path, ctype)
                ingest.post(server, requests, duration=self.args.warmup)
                runs = [
                    ingest.post(server, requests, duration=self.args.duration / 2)
                    for _ in range(self.args.repeat)
                ]
                result = max(runs, key=lambda r: r.events_per_second)
                self.m[key] = result.as_dict(FEATURES) | {
                    "batch_size": size,
                    "runs_feature_values_per_second": [
                        round(r.events_per_second * FEATURES) for r in runs
                    ],
                }
                self.profile(server, key, lambda d, r=requests: ingest.post(server, r, duration=d))
                self.say(
                    f"{key}: {result.events_per_second * FEATURES:,.0f} feature values/s "
                    f"({result.events_per_second:,.0f} events/s, server CPU "
                    f"{result.server_cpu:.0%}, failed {result.failed})"
                )

    def step_cloudevents(self) -> None:
        """KServe's logger CloudEvents vs /monitor/batch for the same events, in pairs.

        One service whose monitor declares the score; per size of an inference (rows), each
        pair posts the CloudEvents and the batch bodies back to back (in turn first).
        """
        from . import cloudevents

        cols = data.frame(20_000, seed=7)
        events, scores = data.rows(cols), data.scores(cols).tolist()
        out: dict[str, Any] = {}
        # Enough clients in flight to keep the server busy: an answer waits for its flush
        # (DRIFTLINE_FLUSH_INTERVAL), so two would measure that wait, which a request half
        # (answered at once) and its response half pay differently.
        clients = 16
        with procs.running(
            procs.start_driftline("driftline-cloudevents", self.scored_monitors, self.logs)
        ) as server:
            for rows in INFERENCE_ROWS:
                logged = cloudevents.inference_requests(server.port, events, scores, rows)
                batches = ingest.prepare(
                    server,
                    cloudevents.batch_bodies(events, scores, rows),
                    "/monitor/batch",
                    "application/json",
                )
                for requests in (logged, batches):
                    ingest.post(server, requests, duration=self.args.warmup, concurrency=clients)
                # Short rounds, alternating which goes first, and their median ratio (as
                # step_prediction): a slower spell of this shared host then weighs on a
                # round or two, not on a whole figure.
                seconds = min(ROUND_SECONDS, self.args.duration / 2)
                count = max(
                    self.args.repeat,
                    round(self.args.duration * self.args.repeat / (2 * seconds)),
                )
                pairs = []
                for r in range(count):
                    ran = {
                        name: ingest.post(server, requests, duration=seconds, concurrency=clients)
                        for name, requests in (
                            (("ce", logged), ("batch", batches))
                            if r % 2 == 0
                            else (("batch", batches), ("ce", logged))
                        )
                    }
                    pairs.append((ran["ce"], ran["batch"]))
                for name, requests in (("cloudevents", logged), ("cloudevents-batch", batches)):
                    self.profile(
                        server,
                        f"{name}-{rows}",
                        lambda d, r=requests: ingest.post(
                            server, r, duration=d, concurrency=clients
                        ),
                    )
                ratios = [ce.events_per_second / b.events_per_second for ce, b in pairs]
                out[str(rows)] = {
                    "rows_per_inference": rows,
                    "cloudevents_events_per_second": sum(ce.events_per_second for ce, _ in pairs)
                    / len(pairs),
                    "batch_events_per_second": sum(b.events_per_second for _, b in pairs)
                    / len(pairs),
                    "ratio": statistics.median(ratios),
                    "mean_ratio": sum(ratios) / len(ratios),
                    "failed": sum(ce.failed + b.failed for ce, b in pairs),
                    # Below ~1.0 the load generator, not the server, set the pace.
                    "server_cpu": [
                        (round(ce.server_cpu, 2), round(b.server_cpu, 2)) for ce, b in pairs
                    ],
                    "pairs": [
                        {
                            "cloudevents": round(ce.events_per_second, 1),
                            "batch": round(b.events_per_second, 1),
                        }
                        for ce, b in pairs
                    ],
                }
                r = out[str(rows)]
                self.say(
                    f"cloudevents, {rows} rows/inference: {r['cloudevents_events_per_second']:,.0f}"
                    f" events/s vs batch {r['batch_events_per_second']:,.0f} (ratio "
                    f"{r['ratio']:.3f}; failed {r['failed']}; server CPU (cloudevents, batch) "
                    f"{r['server_cpu']})"
                )
        self.m["cloudevents"] = out

    def _fleet_evaluation(self, monitors: Path, redis: procs.Redis, env: dict[str, str]) -> float:
        """CPU share of an idle fleet replica assessing every monitor once a second.

        The evaluation loop at a 1 s interval: 1 verdict/s per monitor, on the windows the
        step's traffic left in Redis.
        """
        server = procs.start_driftline(
            "driftline-fleet-evaluation",
            monitors,
            self.logs,
            redis_url=redis.url,
            extra_env={**env, "DRIFTLINE_EVALUATION_INTERVAL": "1"},
            timeout=600,
        )
        with procs.running(server):
            seconds = max(5.0, self.args.duration)
            # Not measured: the first round, which evaluates every window it reads; it
            # is over once every monitor's severity is published.
            count = len(list(monitors.glob("*.json")))
            procs.wait_series(server, "driftline_monitor_severity", count, timeout=300)
            cpu, began = server.cpu_seconds(), time.monotonic()
            time.sleep(seconds)  # the measurement's span: nothing to wait for
            return (server.cpu_seconds() - cpu) / (time.monotonic() - began)

    def _fleet_reload(self, server: procs.Server, monitors: Path) -> dict[str, float]:
        """Hot reload in the loaded fleet replica: one config file added, until it serves.

        The seconds include the wait for the next poll of the directory
        (DRIFTLINE_RELOAD_INTERVAL, 2 s); the CPU seconds are what the replica spent
        meanwhile, idle otherwise (its evaluation loop included).
        """
        first = sorted(monitors.glob("*.json"))[0]
        config = msgspec.json.decode(first.read_bytes())
        config["name"] = "fleet-reloaded"
        added = monitors / "fleet-reloaded.json"
        staged = monitors / ".fleet-reloaded.json"  # hidden: not read until renamed
        staged.write_bytes(msgspec.json.encode(config))
        cpu = server.cpu_seconds()
        os.replace(staged, added)
        try:
            seconds = procs.wait_monitor(server, "fleet-reloaded", timeout=120)
            return {"seconds": seconds, "cpu_seconds": server.cpu_seconds() - cpu}
        finally:
            added.unlink()

    def step_fleet(self) -> None:
        """13.3 Many monitors: a fleet of 50-feature monitors in one replica with Redis.

        Start-up and resident memory against the same replica with one monitor; predict
        spread over every monitor against predict to one, in back-to-back pairs; Redis
        bytes per monitor once each has a window.
        """
        from . import fleet

        a = self.args
        n = 100 if a.quick else FLEET_MONITORS
        many, config_bytes = fleet.write_fleet(self.work / "fleet", n)
        one, _ = fleet.write_fleet(self.work / "fleet-one", 1)
        spread = self.work / "fleet-spread.txt"
        spread.write_bytes(b"\n".join(fleet.predict_bodies(4 * n, n)) + b"\n")
        single = self.work / "fleet-single.txt"
        single.write_bytes(b"\n".join(fleet.predict_bodies(4000, 1)) + b"\n")
        redis = self.get_redis()
        redis.flush()
        # An hour of history: the default week would take ~10 MB of Redis per 50-feature
        # monitor (871-byte records, one per minute), ~10 GB for the fleet; the notes say so.
        history = {"DRIFTLINE_HISTORY_HORIZON": str(FLEET_HISTORY_SECONDS)}
        began = time.monotonic()
        with procs.running(
            procs.start_driftline(
                "driftline-fleet-one", one, self.logs, redis_url=redis.url, extra_env=history
            )
        ) as server:
            one_start, one_rss = time.monotonic() - began, server.rss()
        redis.flush()
        began = time.monotonic()
        server = procs.start_driftline(
            "driftline-fleet",
            many,
            self.logs,
            redis_url=redis.url,
            extra_env=history,
            timeout=600,
        )
        with procs.running(server):
            start, loaded_rss = time.monotonic() - began, server.rss()
            for bodies in (single, spread):
                load.wrk(server, bodies, duration=a.warmup, connections=a.connections)
            # A monitor's first event creates its window key and its metric series: a
            # one-off cost (start-up's kin), not the steady state the ratio compares, so
            # the warm-up goes on until every monitor has had one.
            for _ in range(30):
                if procs.series(server, "driftline_monitor_severity") >= n:
                    break
                load.wrk(server, spread, duration=a.warmup, connections=a.connections)
            pairs = [
                (
                    load.wrk(server, single, duration=a.duration, connections=a.connections),
                    load.wrk(server, spread, duration=a.duration, connections=a.connections),
                )
                for _ in range(a.repeat)
            ]
            busy_rss = server.rss()
            key_bytes = redis.key_bytes()
            reload = self._fleet_reload(server, many)
        evaluation = self._fleet_evaluation(many, redis, history)
        redis.flush()
        ratios = [s.rps / o.rps for o, s in pairs]
        out = {
            "monitors": n,
            "features": fleet.NUMERIC_FEATURES + fleet.CATEGORICAL_FEATURES,
            "profile_bytes": config_bytes,
            "start_seconds": start,
            "one_start_seconds": one_start,
            "rss_loaded": loaded_rss,
            "rss_busy": busy_rss,
            "rss_one": one_rss,
            "rss_per_monitor": (loaded_rss - one_rss) / max(n - 1, 1),
            "redis_bytes_per_monitor": key_bytes / n,
            "one_rps": sum(o.rps for o, _ in pairs) / len(pairs),
            "spread_rps": sum(s.rps for _, s in pairs) / len(pairs),
            "ratio": sum(ratios) / len(ratios),
            "errors": sum(o.errors + s.errors for o, s in pairs),
            "pairs": [(round(o.rps), round(s.rps)) for o, s in pairs],
            "evaluation_cpu": evaluation,
            "reload": reload,
        }
        self.m["fleet"] = out
        self.say(
            f"fleet of {n}: ready in {start:.1f} s (one: {one_start:.1f} s), RSS "
            f"{loaded_rss / 2**20:,.0f} MiB loaded, {busy_rss / 2**20:,.0f} MiB busy "
            f"({out['rss_per_monitor'] / 2**10:,.0f} KiB per monitor); predict spread "
            f"{out['spread_rps']:,.0f} vs one monitor {out['one_rps']:,.0f} req/s "
            f"(ratio {out['ratio']:.3f}); Redis {out['redis_bytes_per_monitor']:,.0f} B/monitor; "
            f"evaluation at 1 verdict/s per monitor: {evaluation:.0%} of a core"
        )

    def step_redis(self) -> None:
        """3 and 5. Predict with Redis, durable and async; Redis cost per event."""
        redis = self.get_redis()
        for mode in ("durable", "async"):
            redis.flush()
            server = procs.start_driftline(
                f"driftline-redis-{mode}",
                self.monitors,
                self.logs,
                redis_url=redis.url,
                ack_mode=mode,
            )
            with procs.running(server):
                a = self.args

                def measured(
                    server: procs.Server = server,
                    redis: procs.Redis = redis,
                    a: argparse.Namespace = a,
                ) -> tuple[load.LoadResult, dict[str, Any]]:
                    redis.reset_stats()
                    before = redis.snapshot()
                    result = load.wrk(
                        server, self.predict_file, duration=a.duration, connections=a.connections
                    )
                    after = redis.snapshot()
                    events = result.requests - result.errors
                    calls = after["calls"] - before["calls"]
                    scripts = after["script_calls"] - before["script_calls"]
                    script_usec = after["script_usec"] - before["script_usec"]
                    cost = {
                        "events": events,
                        "redis_commands": calls,
                        "redis_script_calls": scripts,
                        "commands_per_event": calls / max(events, 1),
                        "script_calls_per_event": scripts / max(events, 1),
                        "events_per_script_call": events / max(scripts, 1),
                        "script_usec_per_event": script_usec / max(events, 1),
                        "redis_cpu_share": (after["cpu"] - before["cpu"])
                        / (after["time"] - before["time"]),
                        "redis_used_memory": after["used_memory"],
                    }
                    return result, {"redis": cost}

                out = self.paired(server, f"predict, redis {mode}", run=measured)
                self.m[f"redis_{mode}"] = out
                if mode == "durable":  # and at 32 connections (issue 13)
                    self.m["redis_durable_c32"] = self.paired(
                        server, "predict, redis durable, 32 connections", repeat=1, connections=32
                    )
                cost = out["redis"]
                self.say(
                    f"redis {mode}: {cost['commands_per_event']:.3f} Redis commands/event "
                    f"({cost['script_calls_per_event']:.3f} EVALSHA/event), "
                    f"{cost['script_usec_per_event']:.2f} us EVALSHA/event, "
                    f"Redis CPU {cost['redis_cpu_share']:.0%}"
                )
                if mode == "durable":
                    self.profile(server, "redis-durable")
                    self._latency(server, "latency_redis_durable", out["mean_rps"])
        self.m["redis_busy"] = self._redis_busy(redis)

    def _redis_busy(self, redis: procs.Redis) -> dict[str, float]:
        """Redis's cost per event while a writer keeps it busy (bench/rediscapacity.py)."""
        from . import rediscapacity

        redis.flush()
        seconds = max(5.0, self.args.duration)
        argv = [sys.executable, "-m", "bench.rediscapacity", redis.url, str(self.monitors)]
        writer = subprocess.Popen(
            procs.pinned(procs.SERVER_CPU, [*argv, str(seconds)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdin is not None
        assert writer.stdout is not None
        with writer:
            if writer.stdout.readline().strip() != "ready":
                raise RuntimeError("bench.rediscapacity did not start writing")
            redis.reset_stats()
            before = redis.snapshot()
            writer.stdin.write("\n")
            writer.stdin.flush()
            wrote = msgspec.json.decode(writer.stdout.readline())
            after = redis.snapshot()
        if writer.returncode:
            raise RuntimeError(f"bench.rediscapacity failed ({writer.returncode})")
        redis.flush()
        events = max(int(wrote["events"]), 1)
        out = {
            "events": float(events),
            "events_per_second": events / seconds,
            "events_per_call": float(rediscapacity.EVENTS),
            "windows": float(rediscapacity.WINDOWS),
            "script_usec_per_event": (after["script_usec"] - before["script_usec"]) / events,
            "cpu_usec_per_event": (after["cpu"] - before["cpu"]) * 1e6 / events,
            "cpu_share": (after["cpu"] - before["cpu"]) / (after["time"] - before["time"]),
            "commands_per_event": (after["calls"] - before["calls"]) / events,
        }
        self.say(
            f"redis busy: {out['events_per_second']:,.0f} events/s written, Redis "
            f"{out['cpu_share']:.0%} busy: {out['script_usec_per_event']:.2f} us EVALSHA "
            f"and {out['cpu_usec_per_event']:.2f} us CPU per event"
        )
        return out

    def _load_all(
        self, servers: Sequence[procs.Server], bodies: Path, duration: float, connections: int
    ) -> list[load.LoadResult]:
        """Maximum throughput of every server at once (wrk), `connections` each."""
        with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
            runs = [
                pool.submit(load.wrk, server, bodies, duration=duration, connections=connections)
                for server in servers
            ]
            return [run.result() for run in runs]

    def _replicas(
        self,
        label: str,
        replicas: int,
        monitors: Path,
        bodies: Path,
        redis_url: str,
        nodes: Sequence[Any],
        *,
        cluster: bool = False,
    ) -> dict[str, Any]:
        """`replicas` services on one Redis (or Cluster) under load together: events/s, cost.

        `nodes`: a client of every Redis server the services use (each master of a
        Cluster); their INFO figures are added up.
        """
        a = self.args
        env = {"DRIFTLINE_REDIS_CLUSTER": "true"} if cluster else {}
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(
                    procs.running(
                        procs.start_driftline(
                            f"driftline-{label}-{replicas}-{i}",
                            monitors,
                            self.logs,
                            redis_url=redis_url,
                            extra_env=env,
                        )
                    )
                )
                for i in range(replicas)
            ]
            connections = max(1, a.connections // replicas)
            self._load_all(servers, bodies, a.warmup, connections)
            for node in nodes:
                node.config_resetstat()
            before = [procs.node_snapshot(node) for node in nodes]
            results = self._load_all(servers, bodies, a.duration, connections)
            after = [procs.node_snapshot(node) for node in nodes]
        events = sum(r.requests - r.errors for r in results)
        per = max(events, 1)
        b, e = procs.summed(before), procs.summed(after)
        r = {
            "replicas": replicas,
            "connections_each": connections,
            "events_per_second": sum(r.rps for r in results),
            "per_replica_rps": [round(r.rps, 1) for r in results],
            "errors": sum(r.errors for r in results),
            "commands_per_event": (e["calls"] - b["calls"]) / per,
            "script_usec_per_event": (e["script_usec"] - b["script_usec"]) / per,
            "events_per_script_call": per / max(e["script_calls"] - b["script_calls"], 1),
            "redis_cpu_usec_per_event": (e["cpu"] - b["cpu"]) * 1e6 / per,
            "net_in_bytes_per_event": (e["net_in"] - b["net_in"]) / per,
            "net_out_bytes_per_event": (e["net_out"] - b["net_out"]) / per,
            # How evenly the script calls fell on the servers (a Cluster's masters).
            "script_calls_by_node": [
                round(y["script_calls"] - x["script_calls"])
                for x, y in zip(before, after, strict=True)
            ],
        }
        self.say(
            f"{label}, {replicas} replica(s): {r['events_per_second']:,.0f} "
            f"events/s ({r['per_replica_rps']} per replica), "
            f"{r['commands_per_event']:.3f} commands/event, "
            f"{r['script_usec_per_event']:.2f} us EVALSHA/event, Redis CPU "
            f"{r['redis_cpu_usec_per_event']:.2f} us/event, "
            f"{r['net_in_bytes_per_event']:.0f} B in / {r['net_out_bytes_per_event']:.0f} B "
            f"out per event, script calls by server {r['script_calls_by_node']}, "
            f"errors {r['errors']}"
        )
        return r

    def step_scaleout(self) -> None:
        """13. 1, 2 and 3 replicas on one Redis (durable), then on a 3-master Redis Cluster.

        Every replica shares one core here (the machine has two; Redis and the load
        generators have the other), so the aggregate shows the cost of sharing Redis, not
        more throughput: the inputs of the capacity plan are per replica and per event.
        The Cluster runs spread CLUSTER_MONITORS fleet monitors over the masters' slots
        (one monitor's keys share one slot), against the same monitors on one Redis.
        """
        import redis as redis_py

        from . import fleet
        from .rediscluster import redis_cluster

        redis = self.get_redis()
        runs = []
        for replicas in SCALE_OUT:
            redis.flush()
            runs.append(
                self._replicas(
                    "scale-out", replicas, self.monitors, self.predict_file, redis.url,
                    [redis.client],
                )
            )  # fmt: skip
        monitors, _ = fleet.write_fleet(self.work / "cluster-fleet", CLUSTER_MONITORS)
        bodies = self.work / "cluster-predict.txt"
        bodies.write_bytes(
            b"\n".join(fleet.predict_bodies(40 * CLUSTER_MONITORS, CLUSTER_MONITORS)) + b"\n"
        )
        redis.flush()
        standalone = self._replicas(
            "fleet on one Redis", CLUSTER_REPLICAS, monitors, bodies, redis.url, [redis.client]
        )
        redis.flush()
        with redis_cluster(self.work / "cluster", CLUSTER_MASTERS) as cluster:
            if procs.pinning():  # beside the standalone Redis, on the load generators' core
                for process in cluster.processes.values():
                    os.sched_setaffinity(process.pid, {int(procs.LOAD_CPU)})
            nodes = [redis_py.Redis(host="127.0.0.1", port=port) for port in cluster.ports]
            try:
                on_cluster = self._replicas(
                    "fleet on a Redis Cluster", CLUSTER_REPLICAS, monitors, bodies,
                    cluster.url, nodes, cluster=True,
                )  # fmt: skip
            finally:
                for node in nodes:
                    node.close()
        self.m["scaleout"] = {
            "runs": runs,
            "cluster": {
                "masters": CLUSTER_MASTERS,
                "monitors": CLUSTER_MONITORS,
                "standalone": standalone,
                "cluster": on_cluster,
            },
        }

    def step_operator(self) -> None:
        """13.3 The operator rendering a fleet of DriftMonitors (bench/operator_fleet.py)."""
        from . import operator_fleet

        n = 100 if self.args.quick else FLEET_MONITORS
        out = operator_fleet.measure(n, self.work / "operator", self.logs)
        out["memory_limit"] = controller_memory_limit()
        self.m["operator"] = out
        self.say(
            f"operator: {n:,} DriftMonitors rendered in {out['render_seconds']:.1f} s "
            f"({out['monitors_per_second']:.1f}/s), CPU {out['operator_cpu_seconds']:.1f} s, "
            f"peak RSS {out['operator_peak_rss'] / 2**20:,.0f} MiB, {out['shards_used']} "
            f"shards, largest {out['largest_shard_bytes']:,} B, not rendered "
            f"{len(out['not_rendered'])}"
        )

    def step_memory(self) -> None:
        """5. Redis memory after 10% and all of --redis-events events."""
        redis = self.get_redis()
        redis.flush()
        total = self.args.redis_events
        size = self.args.batch_size
        first = max(size, total // 10)
        events = data.rows(data.frame(40_000, seed=4))
        # Timestamps over the last 55 minutes of the 1 h window: 56 one-minute buckets fill
        # and none slides out during the run.
        bodies = data.event_bodies(
            events, size, spread_from=time.time() - 3300, spread_seconds=3295
        )
        server = procs.start_driftline(
            "driftline-memory", self.monitors, self.logs, redis_url=redis.url
        )
        with procs.running(server):
            requests = ingest.prepare(server, bodies, "/monitor/batch", "application/json")
            start = redis.snapshot()
            part1 = ingest.post(server, requests, total=math.ceil(first / size))
            # The history ring (docs/ui.md) is allocated whole when the service first
            # records a closed bucket: both readings must hold it, or the ratio would
            # measure its one-off allocation instead of growth with traffic.
            deadline = time.monotonic() + 90
            while not any(redis.client.scan_iter(match="*:history:*")):
                if time.monotonic() > deadline:
                    raise RuntimeError("the history ring was never written")
                time.sleep(0.5)
            # The window's log (up to LOG_FOLD_AT entries, bounded whatever the traffic)
            # holds whatever the last requests appended: each reading is taken folded.
            procs.read_window(server, data.MONITOR)
            at_first = redis.settled_snapshot()
            part2 = ingest.post(server, requests, total=math.ceil((total - first) / size))
            procs.read_window(server, data.MONITOR)
            at_total = redis.settled_snapshot()
        accepted1 = part1.accepted
        accepted = part1.accepted + part2.accepted
        seconds = part1.seconds + part2.seconds
        script_calls = at_total["script_calls"] - start["script_calls"]
        self.m["memory"] = {
            "window_seconds": 3600,
            "bucket_seconds": 60,
            "first_events": accepted1,
            "total_events": accepted,
            "late_events": part1.late + part2.late,
            "failed_requests": part1.failed + part2.failed,
            "used_memory_first": at_first["used_memory"],
            "used_memory_total": at_total["used_memory"],
            "dataset_memory_first": at_first["used_memory_dataset"],
            "dataset_memory_total": at_total["used_memory_dataset"],
            "window_key_bytes_first": at_first["key_bytes"],
            "window_key_bytes_total": at_total["key_bytes"],
            "window_key_bytes_ratio": at_total["key_bytes"] / max(at_first["key_bytes"], 1),
            "client_buffers_first": at_first["mem_clients_normal"],
            "client_buffers_total": at_total["mem_clients_normal"],
            "keys_first": at_first["keys"],
            "keys_total": at_total["keys"],
            "memory_ratio": at_total["used_memory"] / at_first["used_memory"],
            "batch_events_per_second": accepted / seconds,
            "batch_feature_values_per_second": accepted * FEATURES / seconds,
            "commands_per_event": (at_total["calls"] - start["calls"]) / max(accepted, 1),
            "script_calls_per_event": script_calls / max(accepted, 1),
            "seconds": seconds,
        }
        mm = self.m["memory"]
        self.say(
            f"redis memory: {mm['used_memory_first'] / 2**20:.2f} MiB after {accepted1:,} events,"
            f" {mm['used_memory_total'] / 2**20:.2f} MiB after {accepted:,} "
            f"(x{mm['memory_ratio']:.3f}); {mm['batch_feature_values_per_second']:,.0f} "
            f"feature values/s through Redis"
        )

    def step_peers(self) -> None:
        """6. Evidently and whylogs against driftline."""
        from . import peers

        out = peers.compare(self.work / "peers", self.logs, rows=self.args.peer_rows)
        self.m["peers"] = out
        dl = out["driftline"]
        ev = out.get("evidently", {})
        self.say(
            f"peers: driftline {dl['seconds']:.3f} s (+ profile {dl['profile_seconds']:.3f} s); "
            + (
                f"evidently {ev['default']['seconds']:.2f} s (psi {ev['psi']['seconds']:.2f} s)"
                if "default" in ev
                else f"evidently: {ev.get('error')}"
            )
        )

    def step_compare(self) -> None:
        """6. `driftline compare` against Evidently on the same Parquet and CSV files."""
        from . import offline

        out = offline.measure(self.work / "compare", rows=self.args.peer_rows)
        self.m["compare"] = out
        self.say(
            "compare: "
            + "; ".join(
                f"{fmt}: driftline {out[fmt]['driftline_seconds']:.3f} s, evidently "
                f"{out[fmt]['evidently_seconds']:.2f} s ({out[fmt]['ratio']:.1f}x)"
                for fmt in ("parquet", "csv")
            )
            + f"; cold processes {out['cold']['ratio']:.1f}x"
        )

    def step_micro(self) -> None:
        """Microseconds per call of the service's steps (bench/micro.py)."""
        from . import micro

        self.m["micro_us"] = micro.measure(self.monitors)
        self.say("micro: " + ", ".join(f"{k} {v:.1f} us" for k, v in self.m["micro_us"].items()))

    def step_labels(self) -> None:
        """Delayed labels joined and counted per second (bench/labels.py)."""
        from . import labels

        self.m["labels"] = out = labels.measure()
        self.say(f"labels: {out['labels_per_second']:,} labels/s in batches of {out['batch']}")

    def step_client(self) -> None:
        """The Python client against one embedded service (bench/pyclient.py)."""
        from . import pyclient

        with procs.running(
            procs.start_driftline("driftline-client", self.monitors, self.logs)
        ) as server:
            out = pyclient.measure(server, self.args.duration / 2)
        self.m["client"] = out
        self.say(
            f"client: log() {out['log_dict']['us_per_call']:.2f} us/call, log_batch(row) "
            f"{out['log_batch_row']['us_per_call']:.2f} us/call; frames "
            f"{out['frames']['feature_values_per_second']:,.0f}, dicts "
            f"{out['dicts']['feature_values_per_second']:,.0f} feature values/s"
        )

    # --------------------------------------------------------------------- run

    def run(self) -> None:
        """Every selected step in order; a failing step is recorded, the rest go on."""
        self.prepare()
        order: list[tuple[str, Callable[[], None]]] = [
            ("framework", self.step_framework),
            ("embedded", self.step_embedded),
            ("prediction", self.step_prediction),
            ("latency", self.step_latency),
            ("batch", self.step_batch),
            ("cloudevents", self.step_cloudevents),
            ("redis", self.step_redis),
            ("memory", self.step_memory),
            ("peers", self.step_peers),
            ("compare", self.step_compare),
            ("micro", self.step_micro),
            ("labels", self.step_labels),
            ("client", self.step_client),
            ("fleet", self.step_fleet),
            ("scaleout", self.step_scaleout),
            ("operator", self.step_operator),
        ]
        try:
            for name, fn in order:
                if name not in self.args.steps:
                    continue
                self.say(f"step {name}")
                t0 = time.perf_counter()
                try:
                    fn()
                except Exception as exc:
                    self.errors[name] = f"{type(exc).__name__}: {exc}"
                    self.say(f"step {name} failed: {exc}")
                    traceback.print_exc(file=sys.stderr)
                self.timings[name] = round(time.perf_counter() - t0, 1)
        finally:
            if self.redis is not None:
                self.redis.stop()
            if self.framework_server is not None:
                self.framework_server.stop()


# ------------------------------------------------------------------------ report


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "us":
        return f"{value:.2f} us"
    if unit == "x":
        return f"{value:.3f}x" if value < 10 else f"{value:.1f}x"
    if unit == "MiB":
        return f"{value / 2**20:.2f} MiB"
    if unit == "%":
        return f"{value:.0%}"
    if abs(value) >= 1000:
        return f"{value:,.0f}{(' ' + unit) if unit else ''}"
    if abs(value) < 0.01 and value:
        return f"{value:.2e}{(' ' + unit) if unit else ''}"
    return f"{value:.3f}{(' ' + unit) if unit else ''}"


class Table:
    """The result rows (metric, value, reference, ratio, target, pass), section by section."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def row(
        self,
        item: str,
        metric: str,
        value: Any,
        unit: str = "",
        reference: Any = None,
        ref_unit: str = "",
        ratio: float | None = None,
        target: str = "",
        ok: bool | None = None,
        note: str = "",
    ) -> None:
        """Add one row; `text` holds its cells as the table prints them."""
        self.rows.append(
            {
                "item": item,
                "metric": metric,
                "value": value,
                "unit": unit,
                "reference": reference,
                "reference_unit": ref_unit,
                "ratio": ratio,
                "target": target,
                "pass": ok,
                "note": note,
                "text": [
                    item,
                    metric,
                    _fmt(value, unit),
                    _fmt(reference, ref_unit),
                    _fmt(ratio, "x") if ratio is not None else "-",
                    target or "-",
                    {True: "PASS", False: "FAIL", None: "info"}[ok],
                ],
            }
        )


def _framework_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of the framework limit (item 1)."""
    if fw := m.get("framework"):
        table.row(
            "1",
            "framework limit (aiohttp+msgspec, uvloop), req/s",
            fw["rps"],
            "req/s",
            note=f"best of {fw['runs_rps']} req/s; server CPU {fw['server_cpu']:.0%}, wrk CPU "
            f"{fw['generator_cpu']:.0%} of its own core (not the bottleneck); other processes "
            f"{fw['other_cpu']:.2f} cores",
        )
        table.row("1", "framework limit p50 / p99", f"{fw['p50_ms']:.2f} / {fw['p99_ms']:.2f} ms")


def _predict_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of predict throughput against the framework, and latency (items 2, 3)."""
    pairs_note = "ratio: mean over (framework run, service run) pairs back to back: "

    def pair_text(r: dict[str, Any]) -> str:
        return ", ".join(f"{p['rps']:,.0f}/{p['framework_rps']:,.0f}" for p in r["pairs"])

    for key, item, label, target in (
        # Issue 13's targets (goal 1), stricter than items 2 and 3's 0.75x and 0.6x.
        ("embedded", "2", "predict, embedded store, req/s", 0.8),
        ("embedded_c32", "2", "predict, embedded store, 32 connections, req/s", 0.8),
        ("embedded_flush0", "2", "ablation: embedded, DRIFTLINE_FLUSH_INTERVAL=0, req/s", None),
        (
            "embedded_asyncio",
            "2",
            "ablation: embedded and framework on asyncio's loop (DRIFTLINE_EVENT_LOOP=asyncio), "
            "req/s",
            None,
        ),
        ("redis_durable", "3", "predict, Redis durable ack (group commit), req/s", 0.7),
        ("redis_durable_c32", "3", "predict, Redis durable ack, 32 connections, req/s", 0.7),
        ("redis_async", "3", "predict, Redis async ack, req/s", None),
    ):
        r = m.get(key)
        if not r:
            continue
        table.row(
            item,
            label,
            r["mean_rps"],
            "req/s",
            r["mean_framework_rps"],
            "req/s",
            r["ratio"],
            f">= {target}x" if target else "",
            None if target is None else r["ratio"] >= target,
            note=pairs_note
            + pair_text(r)
            + " req/s"
            + ("; not the default" if key in ("embedded_flush0", "embedded_asyncio") else ""),
        )
        if key in ("embedded", "redis_durable", "redis_async"):
            table.row(
                item,
                label.replace(", req/s", ", p50 / p99"),
                f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms",
                note=f"best run; server CPU {r['server_cpu']:.0%}; other processes "
                f"{r['other_cpu']:.2f} cores" + (" (Redis included)" if "redis" in key else ""),
            )


def _history_rows(table: Table, m: dict[str, Any]) -> None:
    """Predict throughput with history recording on (the default) against off."""
    on, off = m.get("embedded"), m.get("embedded_no_history")
    if not on or not off:
        return
    # Each side as its ratio to the framework in back-to-back pairs: runs minutes apart
    # on this shared machine are compared through the framework, not directly.
    table.row(
        "2",
        "predict, embedded, history on / off (framework-relative)",
        on["ratio"],
        "x",
        off["ratio"],
        "x",
        on["ratio"] / off["ratio"],
        note=f"history on {on['mean_rps']:,.0f} req/s, off {off['mean_rps']:,.0f} req/s; "
        "history writes once per monitor per bucket, off the predict path (docs/ui.md)",
    )


PREDICT_PATHS = (
    (
        "prediction",
        "predict with `prediction` (score), embedded, req/s",
        "the same events without `prediction` to a monitor without one",
        0.9,
    ),
    (
        "predict_labels",
        "predict with `prediction` and `id` (labels kept), embedded, req/s",
        "the same events without either to a monitor without labels",
        0.9,
    ),
    (
        "predict_versions",
        "predict to a monitor with 3 declared versions + 5 segments, embedded, req/s",
        "the same events to a monitor declaring none",
        None,
    ),
)


def _prediction_rows(table: Table, m: dict[str, Any]) -> None:
    """A row per new predict path against plain predict (prediction, labels, versions)."""
    for key, metric, reference, target in PREDICT_PATHS:
        if r := m.get(key):
            table.row(
                "2",
                metric,
                r["mean_with_rps"],
                "req/s",
                r["mean_without_rps"],
                "req/s",
                r["ratio"],
                "-" if target is None else f">= {target}x",
                None if target is None else r["ratio"] >= target and not r["errors"],
                note=f"reference: {reference}; ratio: median of {len(r['pairs'])} one-second "
                f"back-to-back pairs (mean {r.get('mean_ratio', r['ratio']):.3f}x): "
                + ", ".join(f"{p['with_rps']:,.0f}/{p['without_rps']:,.0f}" for p in r["pairs"])
                + f" req/s; errors {r['errors']}",
            )


def _batch_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of batch and NDJSON ingestion (item 4)."""
    for key, label in (("batch", "POST /monitor/batch"), ("ndjson", "NDJSON events")):
        if r := m.get(key):
            v = r["feature_values_per_second"]
            table.row(
                "4",
                f"{label}, feature values/s/process",
                v,
                "",
                2_000_000,
                "",
                v / 2_000_000,
                ">= 2,000,000",
                v >= 2_000_000,
                f"{r['batch_size']} events/request, embedded store; best of "
                f"{r['runs_feature_values_per_second']}",
            )


def _cloudevents_rows(table: Table, m: dict[str, Any]) -> None:
    """KServe logger CloudEvents against /monitor/batch for the same events."""
    for r in (m.get("cloudevents") or {}).values():
        rows = r["rows_per_inference"]
        table.row(
            "11",
            f"KServe CloudEvents, {rows} row(s)/inference, events/s",
            r["cloudevents_events_per_second"],
            "",
            r["batch_events_per_second"],
            "",
            r["ratio"],
            ">= 0.8x",
            r["ratio"] >= 0.8 and not r["failed"],
            note=f"reference: POST /monitor/batch of the same {rows} event(s) with their scores; "
            "two CloudEvents (request, response) per inference; ratio: median of "
            f"{len(r['pairs'])} one-second back-to-back pairs (mean "
            f"{r.get('mean_ratio', r['ratio']):.3f}x): "
            + ", ".join(f"{p['cloudevents']:,.0f}/{p['batch']:,.0f}" for p in r["pairs"])
            + f"; failed {r['failed']}",
        )


def _redis_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of Redis commands per event and CPU share (item 5)."""
    if r := m.get("redis_durable"):
        c = r["redis"]
        table.row(
            "5",
            "Redis commands/event, durable, full load",
            c["commands_per_event"],
            "",
            target="<= 0.05",
            ok=c["commands_per_event"] <= 0.05,
            note="all commands incl. those run inside the script",
        )
        table.row(
            "5",
            "EVALSHA/event, durable (events per flush)",
            c["script_calls_per_event"],
            note=f"{c['events_per_script_call']:.1f} events per flush",
        )
        table.row("5", "Redis CPU share, durable (of one core)", c["redis_cpu_share"], "%")
        if "script_usec_per_event" in c:
            usec = c["script_usec_per_event"]
            table.row(
                "5",
                "Redis CPU per event (EVALSHA usec from INFO commandstats / events), "
                "durable, full load",
                usec,
                "us",
                target="<= 2 us",
                ok=usec <= 2,
                note=f"{c['events_per_script_call']:.1f} events per EVALSHA; commandstats "
                "reset before the measured run",
            )
    if b := m.get("redis_busy"):
        usec = b["script_usec_per_event"]
        table.row(
            "5",
            "Redis CPU per event with Redis busy (EVALSHA usec from INFO commandstats / events)",
            usec,
            "us",
            target="<= 2 us",
            ok=usec <= 2,
            note=f"a writer process at full speed kept Redis {b['cpu_share']:.0%} busy: "
            f"{b['events_per_second']:,.0f} events/s, {b['events_per_call']:.0f} per call "
            f"over {b['windows']:.0f} windows, folds included (bench/rediscapacity.py)",
        )
        table.row(
            "5",
            "events/s one Redis core carries (1e6 / Redis CPU per event with Redis busy)",
            1e6 / max(usec, 1e-9),
            target=">= 500,000",
            ok=usec <= 2,
        )
        table.row(
            "5",
            "Redis process CPU per event with Redis busy (INFO cpu, user + sys)",
            b["cpu_usec_per_event"],
            "us",
            note="the scripts plus reading and answering each call, and waking from idle "
            f"between calls at {b['cpu_share']:.0%} busy ({b['commands_per_event']:.3f} "
            "commands per event; docs/performance.md)",
        )
    if r := m.get("redis_async"):
        c = r["redis"]
        table.row(
            "5",
            "Redis commands/event, async, full load",
            c["commands_per_event"],
            note=f"{c['events_per_script_call']:.1f} events per flush",
        )
        table.row("5", "Redis CPU share, async (of one core)", c["redis_cpu_share"], "%")


def _memory_rows(table: Table, m: dict[str, Any], redis_events: int) -> None:
    """Rows of Redis memory against traffic (item 5)."""
    if mm := m.get("memory"):
        table.row(
            "5",
            f"Redis used_memory after {mm['first_events']:,} events",
            mm["used_memory_first"],
            "MiB",
        )
        table.row(
            "5",
            f"Redis used_memory after {mm['total_events']:,} events",
            mm["used_memory_total"],
            "MiB",
            mm["used_memory_first"],
            "MiB",
            mm["memory_ratio"],
            "<= 1.05x",
            mm["memory_ratio"] <= 1.05 and mm["total_events"] >= 10_000_000
            if redis_events >= 10_000_000
            else None,
            f"{mm['keys_total']:.0f} keys; 1 h window of 1 min buckets; each reading taken "
            "after a read folded the window's log (at most 128 entries of 16 + 12 x width "
            "bytes whatever the traffic)",
        )
        table.row(
            "5",
            f"window keys' bytes (MEMORY USAGE), {mm['total_events']:,} vs "
            f"{mm['first_events']:,} events",
            mm["window_key_bytes_total"],
            "",
            mm["window_key_bytes_first"],
            "",
            mm["window_key_bytes_ratio"],
            note="one fixed-width key per monitor layout: its size is set by the layout",
        )
        table.row(
            "5",
            "batch through Redis, feature values/s",
            mm["batch_feature_values_per_second"],
            note=f"{mm['commands_per_event']:.5f} Redis commands/event",
        )


def _seconds_list(seconds: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in seconds) + "] s"


def _peer_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of the peers: Evidently and whylogs, and PSI agreement (item 6)."""
    if p := m.get("peers"):
        dl = p["driftline"]
        ev = p.get("evidently", {})
        if "default" in ev:
            ev_fast = min(ev["default"]["seconds"], ev["psi"]["seconds"])
            ratio = ev_fast / dl["seconds"]
            table.row(
                "6",
                f"driftline vs Evidently {ev['version']}, {p['rows']:,} x 20",
                dl["seconds"],
                "s",
                ev_fast,
                "s",
                ratio,
                ">= 20x",
                ratio >= 20,
                "driftline: the fastest of "
                + _seconds_list(dl["runs_seconds"])
                + " (each a fresh service: encode + POST current frame (columns, msgpack, "
                "packed numbers) + GET report); Evidently: the fastest of DataDriftPreset "
                "default " + _seconds_list(ev["default"]["runs_seconds"]) + " and with PSI "
                f"({ev['psi']['seconds']:.3f} s)",
            )
            same = (
                p["verdicts"]["driftline"]
                == p["verdicts"]["evidently_default"]
                == p["verdicts"]["evidently_psi"]
            )
            table.row(
                "6",
                "same drifted features as Evidently",
                ", ".join(p["verdicts"]["driftline"]),
                target="equal",
                ok=same,
            )
        else:
            table.row("6", "Evidently", ev.get("error", "not run"), ok=False)
        table.row("6", "driftline reference profile build (one-off)", dl["profile_seconds"], "s")
        table.row(
            "6",
            "PSI, driftline vs numpy, same bins: max |diff|",
            dl["psi_max_abs_diff_numpy"],
            target="<= 1e-9",
            ok=dl["psi_max_abs_diff_numpy"] <= 1e-9,
        )
        table.row(
            "6",
            "PSI, driftline vs Evidently psi, same bins: max |diff|",
            dl["psi_max_abs_diff_evidently"],
            target="<= 1e-9",
            ok=dl["psi_max_abs_diff_evidently"] <= 1e-9,
            note=dl["psi_evidently_note"],
        )
        wl = p.get("whylogs", {})
        if "seconds" in wl:
            table.row(
                "6",
                f"whylogs {wl['version']} profile + drift scores",
                wl["seconds"],
                "s",
                dl["seconds"],
                "s",
                wl["seconds"] / dl["seconds"],
                note="flags: " + ", ".join(p["verdicts"]["whylogs"]),
            )
        else:
            table.row("6", "whylogs", wl.get("error", "not run"))


def _compare_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of `driftline compare` against Evidently on the same files (item 6)."""
    if not (c := m.get("compare")):
        return
    size = f"{c['rows']:,} x 20"
    for fmt, target in (("parquet", 20.0), ("csv", None)):
        r = c[fmt]
        same = r["driftline_drifted"] == c["expected_drifted"]
        table.row(
            "6",
            f"`driftline compare` vs Evidently {c['evidently_version']}, {size} {fmt} files",
            r["driftline_seconds"],
            "s",
            r["evidently_seconds"],
            "s",
            r["ratio"],
            f">= {target:g}x" if target else "",
            (r["ratio"] >= target and same) if target else None,
            f"warm, in process, files read by each tool; driftline best of {r['driftline_runs']}"
            f" s, Evidently {r['evidently_runs']} s (DataDriftPreset as shipped); driftline "
            f"flags {', '.join(r['driftline_drifted'])}; Evidently "
            f"{', '.join(r['evidently_drifted'])}",
        )
    cold = c["cold"]
    table.row(
        "6",
        f"`driftline compare` vs Evidently, {size} parquet, fresh processes",
        cold["driftline_seconds"],
        "s",
        cold["evidently_seconds"],
        "s",
        cold["ratio"],
        note=f"interpreter start and imports included (what a CI step pays); driftline also "
        f"wrote the HTML report ({cold['html_bytes'] / 1024:.0f} KiB)",
    )


def _micro_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of the in-process micro benchmarks."""
    if mu := m.get("micro_us"):
        for i, (name, us) in enumerate(mu.items()):
            table.row(
                "µ",
                f"{name}, µs/call",
                us,
                note="" if i else "bench/micro.py: in process, best of 3 timed loops",
            )


def _labels_rows(table: Table, m: dict[str, Any]) -> None:
    """The labels ingest row (issue 10): at least 200,000 labels/s per process."""
    if out := m.get("labels"):
        rate = out["labels_per_second"]
        table.row(
            "L",
            f"labels ingest, batches of {out['batch']}, labels/s",
            rate,
            target=">= 200,000",
            ok=rate >= 200_000,
            note="bench/labels.py: decode, look up, join, count (embedded store, one process)",
        )


def _client_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of the Python client (issue 11)."""
    if c := m.get("client"):
        for key, label in (
            ("log_dict", "log(20-feature dict)"),
            ("log_batch_row", "log_batch(1 row)"),
        ):
            us = c[key]["us_per_call"]
            table.row(
                "11",
                f"client {label}, µs per call to the caller",
                us,
                target="<= 20",
                ok=us <= 20,
                note=f"mean over the loop while the sender thread sends; sent {c[key]['sent']:,}, "
                f"dropped {c[key]['dropped']:,}",
            )
        for key, label, target in (
            ("frames", "frames (packed columns)", True),
            ("dicts", "dicts (events route)", False),
        ):
            r = c[key]
            v = r["feature_values_per_second"]
            table.row(
                "11",
                f"client {label} to one service, feature values/s",
                v,
                "",
                500_000,
                "",
                v / 500_000,
                ">= 500,000" if target else "",
                v >= 500_000 if target else None,
                f"{r['sent']:,} events of {c['features']} features, overflow=block, until flush(); "
                f"not sent {r['failed']}",
            )


def _latency_rows(table: Table, m: dict[str, Any]) -> None:
    """Rows of open-loop latency at half the maximum rate (item 7).

    The reference is the framework app's p99 under the same open loop at the same rate.
    """
    for key, store, limit in (
        ("latency_embedded", "embedded", 15),
        ("latency_redis_durable", "Redis durable", 5),  # issue 13, goal 1
    ):
        if not (r := m.get(key)):
            continue
        floor = r.get("framework")
        table.row(
            "7",
            f"predict p99 at 50% of max ({r['target_rps']:,.0f} req/s), {store}",
            r["p99_ms"],
            "ms",
            None if floor is None else floor["p99_ms"],
            "ms",
            target=f"<= {limit} ms",
            ok=r["p99_ms"] <= limit and r["errors"] == 0,
            note=f"p50 {r['p50_ms']:.2f} ms, achieved {r['rps']:,.0f} req/s, open loop, server "
            f"CPU {r['server_cpu']:.0%}; p99 of each second {r['p99_ms_per_second']}; other "
            f"processes {r['other_cpu']:.2f} cores"
            + (
                ""
                if floor is None
                else f"; reference: the framework app at the same rate, p50 "
                f"{floor['p50_ms']:.2f} ms, server CPU {floor['server_cpu']:.0%}"
            ),
        )


def _fleet_evaluation_row(table: Table, r: dict[str, Any]) -> None:
    """The evaluation loop's share of a core at 1 verdict/s per monitor (issue 13, goal 3)."""
    if "evaluation_cpu" not in r:
        return
    table.row(
        "13",
        f"{r['monitors']:,} monitors: idle replica CPU, evaluation at 1 verdict/s each",
        f"{r['evaluation_cpu']:.0%}",
        "of a core",
        None,
        "",
        None,
        "<= 10%",
        r["evaluation_cpu"] <= 0.10,
        note="the evaluation loop reads every window and assesses it once a second "
        "(DRIFTLINE_EVALUATION_INTERVAL=1), no traffic",
    )


def _replicas_note(run: dict[str, Any]) -> str:
    return (
        f"Redis CPU {run['redis_cpu_usec_per_event']:.2f} us/event, EVALSHA "
        f"{run['script_usec_per_event']:.2f} us/event ({run['events_per_script_call']:.1f} "
        f"events per call), {run['commands_per_event']:.3f} commands/event, "
        f"{run['net_in_bytes_per_event']:.0f} B to and {run['net_out_bytes_per_event']:.0f} B "
        "from Redis per event; per replica "
        + ", ".join(f"{x:,.0f}" for x in run["per_replica_rps"])
        + f" req/s; errors {run['errors']}"
    )


def _scaleout_rows(table: Table, m: dict[str, Any]) -> None:
    """Replicas sharing one Redis, and a Redis Cluster (issue 13, goal 4): the plan's inputs."""
    if not (r := m.get("scaleout")):
        return
    one = r["runs"][0]
    for run in r["runs"]:
        table.row(
            "13",
            f"{run['replicas']} replica(s) on one Redis (one core for all), events/s",
            run["events_per_second"],
            "events/s",
            one["events_per_second"],
            "events/s",
            run["events_per_second"] / one["events_per_second"],
            "-",
            None,
            note=_replicas_note(run),
        )
    if not (c := r.get("cluster")):
        return
    standalone, cluster = c["standalone"], c["cluster"]
    what = f"{cluster['replicas']} replicas, {c['monitors']} monitors x 50 features"
    table.row(
        "13",
        f"{c['masters']}-master Redis Cluster vs one Redis, {what}, events/s",
        cluster["events_per_second"],
        "events/s",
        standalone["events_per_second"],
        "events/s",
        cluster["events_per_second"] / standalone["events_per_second"],
        "-",
        None,
        note=f"Cluster: {_replicas_note(cluster)}; EVALSHA calls per master "
        + ", ".join(f"{x:,}" for x in cluster["script_calls_by_node"])
        + f". One Redis: {_replicas_note(standalone)}",
    )
    table.row(
        "13",
        f"{c['masters']}-master Redis Cluster: Redis CPU per event, all masters",
        cluster["redis_cpu_usec_per_event"],
        "us",
        standalone["redis_cpu_usec_per_event"],
        "us",
        cluster["redis_cpu_usec_per_event"] / standalone["redis_cpu_usec_per_event"],
        "-",
        None,
        note="INFO cpu of every master added up, over the events all replicas acknowledged; "
        "reference: the same replicas and monitors on one Redis",
    )


def controller_memory_limit() -> int:
    """The controller Deployment's memory limit (manifests/controller), in bytes."""
    path = procs.REPO / "manifests/controller/deployment.yaml"
    manifest = msgspec.yaml.decode(path.read_bytes())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return int(quantity(container["resources"]["limits"]["memory"]))


def _operator_rows(table: Table, m: dict[str, Any]) -> None:
    """The operator at fleet scale (issue 13, goal 3)."""
    if not (r := m.get("operator")):
        return
    n = r["monitors"]
    whole = not r["not_rendered"] and not r["keys_in_two_shards"]
    table.row(
        "13",
        f"operator: {n:,} DriftMonitors rendered (every one ConfigRendered), s",
        r["render_seconds"],
        "s",
        None,
        "",
        None,
        "all, each in one shard, none > 1 MiB",
        whole and r["largest_shard_bytes"] <= 2**20,
        note=f"{r['monitors_per_second']:.1f} monitors/s from the operator's start (objects "
        f"created beforehand in {r['create_seconds']:.1f} s; first rendered at "
        f"{r['first_rendered_seconds']:.1f} s); {r['config_bytes']:,} B per config over "
        f"{r['shards_used']} of {r['shards_setting']} ConfigMaps, the largest "
        f"{r['largest_shard_bytes']:,} B; operator CPU {r['operator_cpu_seconds']:.1f} s; "
        f"not rendered {len(r['not_rendered'])}",
    )
    table.row(
        "13",
        f"operator: peak memory with {n:,} DriftMonitors",
        f"{r['operator_peak_rss'] / 2**20:,.0f} MiB",
        "",
        f"{r['memory_limit'] / 2**20:,.0f} MiB",
        "",
        None,
        "<= the manifest's limit",
        r["operator_peak_rss"] <= r["memory_limit"],
        note="peak RSS (VmHWM) of `driftline controller`; reference: its Deployment's "
        "memory limit (manifests/controller/deployment.yaml)",
    )


def _fleet_rows(table: Table, m: dict[str, Any]) -> None:
    """Many monitors in one replica (issue 13, goal 3)."""
    if not (r := m.get("fleet")):
        return
    n, features = r["monitors"], r["features"]
    table.row(
        "13",
        f"{n:,} monitors x {features} features, Redis: replica RSS loaded / busy",
        f"{r['rss_loaded'] / 2**20:,.0f} / {r['rss_busy'] / 2**20:,.0f} MiB",
        "",
        f"{r['rss_one'] / 2**20:,.0f} MiB",
        "one monitor",
        None,
        "<= 1,024 MiB",
        r["rss_busy"] <= 2**30,
        note=f"{r['rss_per_monitor'] / 2**10:,.0f} KiB per monitor in the replica; profile "
        f"file {r['profile_bytes'] / 2**10:,.0f} KiB each",
    )
    table.row(
        "13",
        f"{n:,} monitors: start-up to ready, s",
        r["start_seconds"],
        "s",
        r["one_start_seconds"],
        "s",
        None,
        "-",
        None,
    )
    if reload := r.get("reload"):
        table.row(
            "13",
            f"{n:,} monitors: hot reload, a config added until it serves, s",
            reload["seconds"],
            "s",
            r["start_seconds"],
            "s",
            None,
            "-",
            None,
            note=f"the directory is polled every 2 s (DRIFTLINE_RELOAD_INTERVAL), which the "
            f"time includes; the replica spent {reload['cpu_seconds']:.2f} CPU s meanwhile; "
            "only changed files are read again; reference: start-up",
        )
    table.row(
        "13",
        f"predict spread over {n:,} monitors vs to one, Redis durable, req/s",
        r["spread_rps"],
        "req/s",
        r["one_rps"],
        "req/s",
        r["ratio"],
        ">= 0.9x",
        r["ratio"] >= 0.9 and not r["errors"],
        note="pairs (one, spread): "
        + ", ".join(f"{o:,}/{s:,}" for o, s in r["pairs"])
        + f" req/s; errors {r['errors']}",
    )
    table.row(
        "13",
        f"Redis bytes per monitor ({n:,} monitors, after the runs)",
        r["redis_bytes_per_monitor"],
        "B",
        None,
        "",
        None,
        "-",
        None,
        note=f"window ring and an hour of history ({FLEET_HISTORY_SECONDS} s); the default "
        "week of history adds ~10 MB per 50-feature monitor",
    )
    _fleet_evaluation_row(table, r)


def rows(b: Bench) -> list[dict[str, Any]]:
    """Table rows: metric, value, reference, ratio, target, pass."""
    table = Table()
    m = b.m
    _framework_rows(table, m)
    _predict_rows(table, m)
    _history_rows(table, m)
    _prediction_rows(table, m)
    _batch_rows(table, m)
    _cloudevents_rows(table, m)
    _redis_rows(table, m)
    _memory_rows(table, m, b.args.redis_events)
    _peer_rows(table, m)
    _compare_rows(table, m)
    _micro_rows(table, m)
    _labels_rows(table, m)
    _latency_rows(table, m)
    _client_rows(table, m)
    _fleet_rows(table, m)
    _operator_rows(table, m)
    _scaleout_rows(table, m)
    return table.rows


def render_table(table: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows as an aligned text table (or markdown)."""
    head = ["#", "metric", "value", "reference", "ratio", "target", "result"]
    cells = [r["text"] for r in table]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(x).replace("|", "\\|") for x in c) + " |" for c in cells]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(head, *cells, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*c) for c in cells]
    return "\n".join(lines) + "\n"


def render_notes(table: list[dict[str, Any]]) -> str:
    """The rows' notes, one per line."""
    return "".join(f"  [{r['item']}] {r['metric']}: {r['note']}\n" for r in table if r["note"])


def machine_line(info: dict[str, Any]) -> str:
    """One line saying where the numbers come from."""
    return (
        f"machine: {info['nproc']} cores, {info['cpu_model']}, {info['memory_gib']} GiB, "
        f"Python {info['python']}, load average at start {info['loadavg_at_start']}; "
        f"{info['pinning']}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit 0 when it ran (targets missed are reported, not errors)."""
    args = parse_args(argv)
    # The harness (clients, peers) runs beside the load generator, off the server's core.
    if procs.pinning():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {int(procs.LOAD_CPU)})
    info = procs.machine()
    bench = Bench(args)
    started = time.perf_counter()
    bench.say(machine_line(info))
    bench.run()
    table = rows(bench)
    elapsed = time.perf_counter() - started
    text = render_table(table)
    print()
    print(machine_line(info))
    print(text)
    print("notes:")
    print(render_notes(table))
    for name, error in bench.errors.items():
        print(f"error in {name}: {error}")
    print(f"suite wall time {elapsed:.0f} s; steps: {bench.timings}")
    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_seconds": round(elapsed, 1),
        "step_seconds": bench.timings,
        "measurements": bench.m,
        "profiles": bench.profiles,
        "errors": bench.errors,
        "rows": [{k: v for k, v in r.items() if k != "text"} for r in table],
        "table": text,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.output.with_suffix(".md").write_text(
        f"{machine_line(info)}\n\n{render_table(table, markdown=True)}\n"
        f"Notes:\n\n{render_notes(table)}\n"
        f"suite wall time {elapsed:.0f} s; `{result['command']}`, {result['generated_at']}\n"
    )
    print(f"wrote {args.output} and {args.output.with_suffix('.md')}")
    if bench.errors:
        print(f"server logs and data kept in {bench.work}")
    else:
        shutil.rmtree(bench.work, ignore_errors=True)
    return 0
