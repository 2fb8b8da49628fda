"""The `driftline` command: serve, show the settings, build baselines, simulate traffic."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import msgspec

from driftline import __version__, eventloop
from driftline.core.performance import measure_baseline
from driftline.core.policy import DEFAULTS
from driftline.core.prediction import (
    PredictionKind,
    PredictionSpec,
    is_prediction_column,
    spec_problem,
)
from driftline.core.profile import (
    BaselineError,
    BaselineProfile,
    Column,
    FeatureKind,
    build_profile,
    encode_profile,
    read_table,
)
from driftline.core.severity import SEVERITY_RANK
from driftline.logs import configure_logging
from driftline.settings import Settings, SettingsError, load_settings, setting_sources

PARQUET_SUFFIXES = (".parquet", ".pq")


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings `serve` and `config` take as flags (None: not given)."""
    return {
        "host": args.host,
        "port": args.port,
        "monitors_dir": args.monitors_dir,
        "redis_url": args.redis_url,
        "default_monitor": args.default_monitor,
    }


def _settings(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(**_flag_overrides(args))
    except SettingsError as exc:
        print(f"driftline: invalid settings: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from driftline.http.app import serve

    settings = _settings(args)
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    eventloop.run(serve(settings), settings.event_loop)
    return 0


def _setting_lines(
    values: Mapping[str, Any], sources: Mapping[str, str], prefix: str = ""
) -> Iterator[str]:
    indent = "  " * prefix.count(".")
    for name, value in values.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            yield f"{indent}{name}:"
            yield from _setting_lines(value, sources, f"{path}.")
        else:
            # JSON scalars are YAML: the output is a valid settings file.
            yield f"{indent}{name}: {json.dumps(value)}  # {sources.get(path, 'default')}"


def _config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    sources = setting_sources(**_flag_overrides(args))
    for line in _setting_lines(msgspec.to_builtins(settings), sources):
        print(line)
    return 0


def _prediction_spec(args: argparse.Namespace) -> PredictionSpec | None:
    """The prediction the flags declare, or None; BaselineError when they do not fit."""
    if args.prediction_kind is None:
        if args.prediction or args.classes:
            raise BaselineError("--prediction and --classes need --prediction-kind")
        return None
    try:
        spec = msgspec.convert(
            {
                "kind": args.prediction_kind,
                "classes": args.classes.split(",") if args.classes else [],
                "column": args.prediction or ["prediction"],
            },
            PredictionSpec,
        )
    except msgspec.ValidationError as exc:
        raise BaselineError(f"prediction: {exc}") from None
    problem = spec_problem(spec)
    if problem is not None:
        raise BaselineError(f"prediction.{problem}")
    return spec


def _baseline_build(args: argparse.Namespace) -> int:
    kinds: dict[str, FeatureKind] = {name: "categorical" for name in args.categorical}
    kinds.update({name: "numeric" for name in args.numeric})
    path = Path(args.data)
    label: str | None = args.label
    try:
        prediction = _prediction_spec(args)
        if label is not None and prediction is None:
            raise BaselineError("--label needs the prediction it labels: --prediction-kind")
        table: Mapping[str, Column] | BaselineProfile
        if path.suffix.lower() in PARQUET_SUFFIXES:
            from driftline.client.baseline import read_parquet  # pyarrow: an optional extra

            wanted = args.column + (prediction.columns if prediction and args.column else [])
            wanted += [label] if label is not None and args.column else []
            table = read_parquet(path, wanted or None)
        elif args.column:
            raise BaselineError("--column picks the columns of a Parquet file only")
        else:
            table = read_table(path)
        if isinstance(table, BaselineProfile):
            if label is not None:
                raise BaselineError(f"{path}: --label needs labelled rows, not a saved profile")
            profile = table
        else:
            training = {name: values for name, values in table.items() if name != label}
            profile = build_profile(
                training, kinds=kinds, bins=args.bins, top_k=args.top_k, prediction=prediction
            )
            if label is not None:
                assert prediction is not None
                profile = measure_baseline(profile, prediction, table, label, args.threshold)
    except BaselineError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return 1
    data = encode_profile(profile)
    features = [name for name in profile.features if not is_prediction_column(name)]
    if args.output == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(args.output).write_bytes(data)
        print(
            f"wrote {args.output}: {len(features)} features"
            + (f" and a {prediction.kind} prediction" if prediction else "")
            + (f" with its performance on {label}" if label else "")
            + f" from {profile.rows} rows "
            f"(hash {profile.content_hash})",
            file=sys.stderr,
        )
    return 0


def _write(target: str, data: bytes) -> None:
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(target).write_bytes(data)


def _compare(args: argparse.Namespace) -> int:
    from driftline.reporting import InputError, compare
    from driftline.reporting.comparison import fails
    from driftline.reporting.html import flagged_first

    try:
        result = compare(args.reference, args.current, config=args.monitor)
    except InputError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"driftline: warning: {warning}", file=sys.stderr)
    report = result.report
    try:
        if args.json:
            _write(args.json, result.to_json() + b"\n")
        if args.html:
            _write(args.html, result.to_html().encode())
    except OSError as exc:
        print(f"driftline: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    # The summary goes to stderr when stdout carries a report.
    out = sys.stderr if "-" in (args.json, args.html) else sys.stdout
    window = report.window
    readiness = "ready" if window.ready else f"not ready: fewer than {window.min_samples} rows"
    print(
        f"severity {report.severity}, drift score {report.drift_score:.4g}, "
        f"{window.events:,} current rows ({readiness}); drifted: "
        + (", ".join(report.drifted_features) or "none"),
        file=out,
    )
    width = max(len(name) for name in report.features)
    for name in flagged_first(report):
        feature = report.features[name]
        print(
            f"  {name:<{width}}  {feature.severity:<8}  score {feature.score:<10.4g}  "
            f"p {feature.p_value:.3g}",
            file=out,
        )
    return 1 if args.fail_on and fails(report, args.fail_on) else 0


def _simulate(args: argparse.Namespace) -> int:
    from driftline.simulate import run_simulation

    code: int = asyncio.run(run_simulation(args))
    return code


def _controller(args: argparse.Namespace) -> int:
    # Imported here: the operator's dependencies (kopf, lightkube) are an optional extra.
    from driftline.operator import run
    from driftline.operator.settings import ControllerSettingsError, load_controller_settings

    try:
        settings = load_controller_settings(
            namespaces=args.namespace,
            replica_capacity=args.replica_capacity,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            cpu_utilization=args.cpu_utilization,
            status_interval=args.status_interval,
            service_timeout=args.service_timeout,
            liveness_endpoint=args.liveness_endpoint,
        )
    except ControllerSettingsError as exc:
        print(f"driftline: invalid controller settings: {exc}", file=sys.stderr)
        return 2
    return run(settings)


def _service_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", help="listen address (default 0.0.0.0, env DRIFTLINE_HOST)")
    command.add_argument("--port", type=int, help="listen port (default 8080, env DRIFTLINE_PORT)")
    command.add_argument(
        "--monitors-dir", help="directory of monitor configs (DRIFTLINE_MONITORS_DIR)"
    )
    command.add_argument("--redis-url", help="Redis URL; embedded store when unset (REDIS_URL)")
    command.add_argument(
        "--default-monitor",
        help="monitor for requests that name none (DRIFTLINE_DEFAULT_MONITOR)",
    )


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    root = argparse.ArgumentParser(prog="driftline", description=__doc__)
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the drift service")
    _service_flags(serve)
    serve.set_defaults(run=_serve)

    config = commands.add_parser(
        "config",
        help="print the resolved settings and where each value comes from",
        description="Print the settings `driftline serve` would run with (same flags and "
        "variables), as a settings file: each line says whether its value is the default "
        "or comes from DRIFTLINE_SETTINGS_FILE, an environment variable or a flag.",
    )
    _service_flags(config)
    config.set_defaults(run=_config)

    baseline = commands.add_parser("baseline", help="baseline profiles")
    baseline_commands = baseline.add_subparsers(dest="baseline_command", required=True)
    build = baseline_commands.add_parser(
        "build",
        help="build a profile from training rows (CSV, JSON records or columns, Parquet)",
        description="Build a baseline profile from training data: CSV, JSON records or "
        "columns, or Parquet (.parquet/.pq; needs the `parquet` extra: pip install "
        "'driftline[parquet]').",
    )
    build.add_argument("data", help="training data file")
    build.add_argument(
        "-o", "--output", default="-", help="profile file to write; - is stdout (default -)"
    )
    build.add_argument(
        "--bins",
        type=int,
        default=DEFAULTS.bins,
        help="quantile bins per numeric feature (default %(default)s)",
    )
    build.add_argument(
        "--top-k",
        type=int,
        default=DEFAULTS.top_k,
        help="categories kept per categorical feature (default %(default)s)",
    )
    build.add_argument(
        "--categorical",
        action="append",
        default=[],
        metavar="FEATURE",
        help="treat FEATURE as categorical (repeatable)",
    )
    build.add_argument(
        "--numeric",
        action="append",
        default=[],
        metavar="FEATURE",
        help="treat FEATURE as numeric (repeatable)",
    )
    build.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME",
        help="Parquet: use this column as a feature (repeatable; default every column)",
    )
    build.add_argument(
        "--prediction-kind",
        choices=get_args(PredictionKind),
        help="the model's prediction is in the data: regression, score, class or "
        "probabilities (docs/predictions.md)",
    )
    build.add_argument(
        "--prediction",
        action="append",
        default=[],
        metavar="COLUMN",
        help="the prediction's column (default `prediction`); for probabilities, one "
        "column of objects or lists, or one column per class in class order (repeat)",
    )
    build.add_argument(
        "--classes",
        metavar="A,B,...",
        help="class and probabilities predictions: the classes, comma-separated, the "
        "positive (or first) class first",
    )
    build.add_argument(
        "--label",
        metavar="COLUMN",
        help="the true outcome's column of a labelled validation set: the profile keeps "
        "the model's performance on it, which monitors with labels compare with "
        "(docs/labels.md)",
    )
    build.add_argument(
        "--threshold",
        type=float,
        default=DEFAULTS.labels.threshold,
        help="score predictions with --label: a score at or above it predicts the "
        "positive class, as the monitor's labels.threshold (default %(default)s)",
    )
    build.set_defaults(run=_baseline_build)

    compare = commands.add_parser(
        "compare",
        help="compare current data with reference data offline (a drift gate for CI)",
        description="Judge CURRENT against REFERENCE (CSV, JSON records or columns, or "
        "Parquet with the `parquet` extra) with the service's profiles, binning and tests: "
        "the report is the one GET /v1/monitors/{name}/drift answers. Exit status: 0 when "
        "the severity is below --fail-on (or no --fail-on), 1 at or above it, 2 for bad "
        "usage or input.",
    )
    compare.add_argument(
        "--reference",
        metavar="REF",
        help="training data, or a saved profile; optional when --monitor names a baseline",
    )
    compare.add_argument("--current", metavar="CUR", required=True, help="data to judge")
    compare.add_argument(
        "--monitor",
        metavar="CONFIG",
        help="a monitor config (YAML or JSON): thresholds, alpha, min_samples, feature "
        "types, bins; its baseline is used when --reference is not given",
    )
    compare.add_argument("--json", metavar="FILE", help="write the JSON report (- is stdout)")
    compare.add_argument("--html", metavar="FILE", help="write the HTML report (- is stdout)")
    compare.add_argument(
        "--fail-on",
        choices=[name for name, rank in sorted(SEVERITY_RANK.items(), key=lambda i: i[1]) if rank],
        help="exit 1 when the severity is at or above this one",
    )
    compare.set_defaults(run=_compare)

    simulate = commands.add_parser(
        "simulate",
        help="send realistic traffic to a running service",
        description="Draw events from the monitor's own baseline profile and send them, one "
        "scenario after another (they share the window, as real traffic would): baseline "
        "(drift-free), moderate (numeric features shifted by 0.5 SD, 15 % of each "
        "categorical moved to its rarest category), high (2 SD, 60 %), feature:NAME "
        "(only NAME drifts, as high), prediction (only the model's prediction drifts, as "
        "high; for a monitor that declares one), performance (nothing drifts; the "
        "predictions go with ids an hour back in event time and their labels follow, 10 "
        "points less accurate than the baseline's; for a monitor that takes labels), "
        "challenger (as performance, half to each of the first two declared model versions, "
        "the second's labels worse; then the comparison's verdict), or all of the first "
        "three.",
    )
    simulate.add_argument(
        "--url", default="http://127.0.0.1:8080", help="service base URL (default %(default)s)"
    )
    simulate.add_argument("--monitor", help="monitor to send to; unset: the service's default")
    simulate.add_argument(
        "--scenario",
        default="all",
        help="baseline | moderate | high | prediction | performance | challenger | "
        "feature:NAME | all: "
        "baseline, moderate, high in turn (default %(default)s); performance sends "
        "predictions with ids an hour back in event time, then worse labels",
    )
    simulate.add_argument(
        "--events", type=int, default=500, help="events per scenario (default %(default)s)"
    )
    simulate.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight (default %(default)s)"
    )
    simulate.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
    simulate.add_argument(
        "--batch",
        type=int,
        default=0,
        help="send batches of this size instead of /predict; 0: /predict (default %(default)s)",
    )
    simulate.set_defaults(run=_simulate)

    controller = commands.add_parser(
        "controller", help="run the DriftMonitor operator (docs/operator.md)"
    )
    controller.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; default all, DRIFTLINE_CONTROLLER_NAMESPACES)",
    )
    for flag, kind, text in (
        ("--replica-capacity", float, "events/s per service replica (default 2000)"),
        ("--min-replicas", int, "HPA minReplicas floor (default 2)"),
        ("--max-replicas", int, "HPA maxReplicas cap (default 20)"),
        ("--cpu-utilization", int, "HPA CPU utilization target in percent (default 70)"),
        ("--status-interval", float, "seconds between status refreshes (default 30)"),
        ("--service-timeout", float, "drift service call timeout in seconds (default 5)"),
        ("--liveness-endpoint", str, "kopf liveness URL, e.g. http://0.0.0.0:8081/healthz"),
    ):
        controller.add_argument(flag, type=kind, help=text)
    controller.set_defaults(run=_controller)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `driftline` console script."""
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
