"""Streams held against p99 event latency, for each server of a `bench streams`
JSON report (`--json-out`), as a PNG:

    python -m orders.bench.plot streams-sweep.json streams-p99.png

matplotlib is a bench-only requirement (requirements-bench.txt).
"""

import argparse
import json
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
        points = sorted(
            (run["streams"], run["latency_ms"]["p99"])
            for run in report["runs"]
            if run["server"] == server and run["latency_ms"]["p99"] is not None
        )
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker="o", label=LABELS.get(server, server))
    plan = report["plan"]
    axes.set_xlabel(f"order streams held (+ {plan['staff_streams']} staff streams)")
    axes.set_ylabel("event latency p99 (ms)")
    axes.set_title(
        f"One daphne, {report['database'].split(',')[0].split(' ')[0]}; "
        f"{plan['flow_rate']:g} orders/s moving for {plan['flow_seconds']:g} s"
    )
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
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
