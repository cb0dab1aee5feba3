"""Streams held against p99 event latency, for each server of a `bench streams`
JSON report (`--json-out`), as a PNG:

    python -m orders.bench.plot docs/benchmarks/streams-sweep.json \
        docs/benchmarks/streams-p99.png

matplotlib is a bench-only requirement (requirements-bench.txt).
"""

import argparse
import json
import statistics
from pathlib import Path

LABELS = {
    "orderproj": "orderproj (ours)",
    "eventstream": "django-eventstream",
    "eventstream-storage": "django-eventstream + DjangoModelStorage",
}


def plot(report: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a file, no display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=100)
    servers = dict.fromkeys(run["server"] for run in report["runs"])
    for server in servers:
        # Every repeat's p99 at each size; the line joins their medians, the
        # bars span the lowest to the highest.
        by_size: dict[int, list[float]] = {}
        for run in report["runs"]:
            if run["server"] == server and run["latency_ms"]["p99"] is not None:
                by_size.setdefault(run["streams"], []).append(run["latency_ms"]["p99"])
        if not by_size:
            continue
        sizes = sorted(by_size)
        medians = [statistics.median(by_size[size]) for size in sizes]
        low = [
            median - min(by_size[size])
            for size, median in zip(sizes, medians, strict=True)
        ]
        high = [
            max(by_size[size]) - median
            for size, median in zip(sizes, medians, strict=True)
        ]
        axes.errorbar(
            sizes,
            medians,
            yerr=[low, high],
            marker="o",
            capsize=4,
            label=LABELS.get(server, server),
        )
    plan = report["plan"]
    axes.set_xlabel(f"order streams held (+ {plan['staff_streams']} staff streams)")
    repeats = plan.get("repeats", 1)
    axes.set_ylabel(
        "event latency p99 (ms)"
        + (
            f"\nmedian of {repeats} runs, bars: lowest to highest"
            if repeats > 1
            else ""
        )
    )
    axes.set_title(
        f"One daphne, {report['database'].split(',')[0].split(' ')[0]}; "
        f"{plan['flow_rate']:g} orders/s moving for {plan['flow_seconds']:g} s"
    )
    # Log scale: one slow run on a busy machine would flatten the rest.
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(output)
    pyplot.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="bench streams --json-out FILE")
    parser.add_argument("output", type=Path, help="the PNG to write")
    arguments = parser.parse_args()
    plot(json.loads(arguments.report.read_text()), arguments.output)


if __name__ == "__main__":
    main()
