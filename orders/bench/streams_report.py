"""What one run of `bench streams` records (`StreamsRun`, the JSON report's
runs) and the table the report prints of them, each server beside ours."""

from dataclasses import dataclass, field

from orders.bench.figures import Figures

LABELS = {
    "orderproj": "orderproj",
    "eventstream": "django-eventstream",
    "eventstream-storage": "d-e + storage",
    "floor": "daphne floor",
}


@dataclass
class StreamsRun:
    server: str
    streams: int
    staff_streams: int
    repeat: int = 1
    error: str | None = None
    opened: int = 0  # order and staff streams
    staff_opened: int = 0
    open_s: float | None = None
    shed_503: int = 0
    # CPU time of all the client processes: while opening, and in all.
    client_cpu_open_s: float | None = None
    client_cpu_s: float | None = None
    # How late the last client process began after the common start.
    client_start_lag_s: float | None = None
    refused: dict = field(default_factory=dict)
    ended_early: int = 0
    retries: int = 0
    retries_refused: int = 0
    order_events: int = 0
    staff_events: int = 0
    # Events written during the flow, times the staff streams open: what the
    # staff streams should have received.
    staff_events_expected: int | None = None
    repeated: int = 0  # events a stream gave again (or out of order)
    # Whether the server had read every event when the clients stopped.
    caught_up: bool | None = None
    latency_ms: Figures = field(default_factory=Figures)
    order_latency_ms: Figures = field(default_factory=Figures)
    staff_latency_ms: Figures = field(default_factory=Figures)
    rss_before_kib: int | None = None
    rss_open_kib: int | None = None
    rss_per_stream_kib: float | None = None
    threads_before: int | None = None
    threads_open: int | None = None
    db_connections_before: int | None = None
    db_connections_open: int | None = None
    queries_per_s: float | None = None
    polls_per_s: float | None = None
    # The web process's CPU time while the streams opened, and while the orders
    # flowed (from the first retry until every event was read and delivered).
    web_cpu_open_s: float | None = None
    web_cpu_flow_s: float | None = None
    flow_s: float | None = None
    # orderproj only (its /api/streams): full garbage collections while the
    # orders flowed, and the longest of them (orders/live/gc_freeze.py).
    full_collections_flow: int | None = None
    longest_full_collection_flow_ms: float | None = None


ROWS = [
    ("streams opened", "opened", "{:.0f}"),
    ("open time (s)", "open_s", "{:.2f}"),
    ("503 answers (retried)", "shed_503", "{:.0f}"),
    ("client start lag (s)", "client_start_lag_s", "{:.2f}"),
    (
        "client CPU opening / in all (s)",
        ("client_cpu_open_s", "client_cpu_s"),
        "{:.1f}",
    ),
    ("event latency p50 (ms)", ("latency_ms", "p50"), "{:.0f}"),
    ("event latency p95 (ms)", ("latency_ms", "p95"), "{:.0f}"),
    ("event latency p99 (ms)", ("latency_ms", "p99"), "{:.0f}"),
    ("event latency max (ms)", ("latency_ms", "max"), "{:.0f}"),
    ("events measured", ("latency_ms", "count"), "{:.0f}"),
    (
        "staff events received / written",
        ("staff_events", "staff_events_expected"),
        "{}",
    ),
    ("RSS before (MiB)", "rss_before_kib", "{:.1f}", 1 / 1024),
    ("RSS, streams open (MiB)", "rss_open_kib", "{:.1f}", 1 / 1024),
    ("RSS per stream (KiB)", "rss_per_stream_kib", "{:.1f}"),
    ("threads before / open", ("threads_before", "threads_open"), "{}"),
    (
        "DB connections before / open",
        ("db_connections_before", "db_connections_open"),
        "{}",
    ),
    ("DB reads/s of the pump / relay", "queries_per_s", "{:.1f}"),
    ("web CPU opening / flowing (s)", ("web_cpu_open_s", "web_cpu_flow_s"), "{:.1f}"),
    ("flow, first retry to last event (s)", "flow_s", "{:.1f}"),
    ("full GC collections while flowing", "full_collections_flow", "{:.0f}"),
    (
        "longest full GC while flowing (ms)",
        "longest_full_collection_flow_ms",
        "{:.0f}",
    ),
    ("streams ended by the server", "ended_early", "{:.0f}"),
    ("events repeated or out of order", "repeated", "{:.0f}"),
    ("server read every event", "caught_up", "{}"),
]


PAIRS = {
    "threads_before",
    "db_connections_before",
    "staff_events",
    "client_cpu_open_s",
    "web_cpu_open_s",
}


def cell(run: dict, key, template: str, scale: float | None = None) -> str:
    if isinstance(key, tuple) and key[0] in PAIRS:
        values = [run.get(name) for name in key]
        return " / ".join(
            "-" if value is None else template.format(value) for value in values
        )
    value = run[key[0]][key[1]] if isinstance(key, tuple) else run.get(key)
    if value is None:
        return "-"
    return template.format(value if scale is None else value * scale)


def format_streams(report: dict) -> list[str]:
    plan = report["plan"]
    lines = [
        f"streams: {report['database']}; {plan['client_processes']} client "
        f"processes; orders flowing: {plan['flow_rate']:g} retries/s for "
        f"{plan['flow_seconds']:g} s (~10 events each)"
    ]
    for server, why in report["skipped"].items():
        lines.append(f"{LABELS[server]}: skipped, {why}")
    groups: dict[tuple[int, int], list[dict]] = {}
    for run in report["runs"]:
        groups.setdefault((run["repeat"], run["streams"]), []).append(run)
    for (repeat, size), runs in groups.items():
        title = f"{size} order streams + {plan['staff_streams']} staff streams"
        if plan["repeats"] > 1:
            title += f" (repeat {repeat} of {plan['repeats']})"
        lines += ["", title]
        others = [run for run in runs if run["server"] != "orderproj"]
        ours = next((run for run in runs if run["server"] == "orderproj"), None)
        header = f"{'':<34}" + "".join(f"{LABELS[r['server']]:>20}" for r in runs)
        if ours:
            header += "".join(f"{'÷ ours':>8}" for _ in others)
        lines.append(header)
        for label, key, template, *scale in ROWS:
            cells = [cell(run, key, template, *scale) for run in runs]
            line = f"{label:<34}" + "".join(f"{value:>20}" for value in cells)
            ratios = [run_ratio(ours, other, key) for other in others] if ours else []
            if any(ratio is not None for ratio in ratios):
                line += "".join(
                    f"{'':>8}" if ratio is None else f"{ratio:>8.2f}"
                    for ratio in ratios
                )
            lines.append(line)
        for run in runs:
            if run["error"]:
                lines.append(f"{LABELS[run['server']]}: {run['error']}")
            if run["refused"]:
                lines.append(f"{LABELS[run['server']]} refused: {run['refused']}")
    return lines


RATIO_KEYS = {
    "open_s",
    ("latency_ms", "p50"),
    ("latency_ms", "p99"),
    "rss_per_stream_kib",
}


def run_ratio(ours: dict, other: dict, key) -> float | None:
    """The other server's figure ÷ ours, where both were measured."""
    if key not in RATIO_KEYS:
        return None
    ours, theirs = (
        run[key[0]][key[1]] if isinstance(key, tuple) else run[key]
        for run in (ours, other)
    )
    if not ours or theirs is None:
        return None
    return theirs / ours
