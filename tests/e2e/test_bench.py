import importlib.util
import json
import os
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.e2e

STREAMS = ["--streams", "20", "--staff-streams", "2", "--client-processes", "2"]
FLOW = ["--flow-rate", "5", "--flow-seconds", "2"]


def run_bench(*args: str) -> dict:
    out = StringIO()
    call_command("bench", *args, "--timeout", "120", "--json", stdout=out)
    return json.loads(out.getvalue())


def assert_ordered(figures: dict) -> None:
    assert 0 <= figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]


def test_bench_placing_and_retries_measure_a_service_of_their_own():
    report = run_bench(
        "placing",
        "retries",
        "--orders",
        "12",
        "--concurrency",
        "4",
        "--retry-orders",
        "3",
    )
    assert report["plan"]["scenarios"] == ["placing", "retries"]
    assert "pipeline" not in report
    assert "streams" not in report
    assert report["completed"] + report["failed"] == 12
    assert report["place_latency_ms"]["count"] == 12
    assert report["baseline_latency_ms"]["count"] == 12
    assert report["place_vs_baseline"] == pytest.approx(
        report["place_rate_per_s"] / report["baseline_rate_per_s"]
    )
    assert report["time_to_complete_s"]["count"] == 12
    assert report["retry_lateness_s"]["count"] == 3
    for name in ("place_latency_ms", "baseline_latency_ms", "retry_lateness_s"):
        assert_ordered(report[name])


def assert_streams_run(run: dict, *, streams: int, staff: int) -> None:
    """Every stream opened, events arrived on both kinds of stream, and every
    figure of the web process is there."""
    assert run["error"] is None
    assert (run["streams"], run["staff_streams"]) == (streams, staff)
    assert (run["opened"], run["staff_opened"]) == (streams + staff, staff)
    assert run["refused"] == {}
    assert run["open_s"] > 0
    assert run["retries"] + run["retries_refused"] == 10
    assert run["retries"] >= 1
    assert run["order_events"] >= run["retries"]
    assert run["latency_ms"]["count"] == (
        run["order_latency_ms"]["count"] + run["staff_latency_ms"]["count"]
    )
    for name in ("latency_ms", "order_latency_ms", "staff_latency_ms"):
        assert_ordered(run[name])
    assert run["rss_open_kib"] > 0
    assert run["rss_before_kib"] > 0
    assert run["rss_per_stream_kib"] == pytest.approx(
        (run["rss_open_kib"] - run["rss_before_kib"]) / run["opened"]
    )
    assert run["threads_before"] >= 1
    assert run["threads_open"] >= 1
    assert run["db_connections_open"] >= 0
    assert run["queries_per_s"] > 0
    assert run["web_cpu_flow_s"] > 0
    assert run["flow_s"] >= 2
    assert run["client_cpu_s"] > 0
    assert run["caught_up"] is True
    assert run["repeated"] == 0


def test_bench_streams_holds_order_and_staff_streams_while_orders_flow(tmp_path):
    out = tmp_path / "streams.json"
    report = run_bench(
        "streams", *STREAMS, *FLOW, "--servers", "orderproj", "--json-out", str(out)
    )
    assert report["plan"]["scenarios"] == []
    streams = report["streams"]
    assert json.loads(out.read_text()) == streams
    assert streams["plan"]["sizes"] == [20]
    (run,) = streams["runs"]
    assert (run["server"], run["repeat"]) == ("orderproj", 1)
    assert_streams_run(run, streams=20, staff=2)
    # Our staff streams get every event the pump read: none lost.
    assert run["staff_events"] == run["staff_events_expected"] > 0


eventstream_missing = importlib.util.find_spec("django_eventstream") is None


@pytest.mark.skipif(
    eventstream_missing and os.environ.get("REQUIRE_BENCH_EXTRAS") != "1",
    reason="django-eventstream is not installed (pip install -r "
    "requirements-bench.txt; REQUIRE_BENCH_EXTRAS=1 makes this a failure)",
)
def test_bench_streams_measures_django_eventstream_beside_ours_in_one_run(tmp_path):
    report = run_bench("streams", *STREAMS, *FLOW, "--sizes", "10,20")
    streams = report["streams"]
    assert streams["skipped"] == {}
    assert [(run["server"], run["streams"]) for run in streams["runs"]] == [
        ("orderproj", 10),
        ("eventstream", 10),
        ("orderproj", 20),
        ("eventstream", 20),
    ]
    for run in streams["runs"]:
        assert_streams_run(run, streams=run["streams"], staff=2)
    png = tmp_path / "p99.png"
    plot_report(streams, png)
    assert png.read_bytes().startswith(b"\x89PNG")


def plot_report(report: dict, png) -> None:
    from orders.bench.plot import plot

    plot(report, png)


def test_bench_pipeline_reports_noop_and_order_drain_rates_and_pickup_latency():
    report = run_bench(
        "pipeline", "--noop-tasks", "20", "--pipeline-orders", "10", "--pickups", "3"
    )
    assert report["plan"]["scenarios"] == []
    assert "place_latency_ms" not in report
    pipeline = report["pipeline"]
    assert pipeline["plan"] == {
        "noop_tasks": 20,
        "orders": 10,
        "pickups": 3,
        "timeout": 120.0,
    }
    assert (pipeline["database"], pipeline["workers"]) == ("sqlite", 2)
    assert pipeline["broker"].startswith("ORM")
    assert (pipeline["orders_completed"], pipeline["orders_failed"]) == (10, 0)
    assert pipeline["noop_rate_per_s"] > 0
    assert pipeline["orders_rate_per_s"] > 0
    assert pipeline["ratio"] == pytest.approx(
        pipeline["orders_rate_per_s"] / pipeline["noop_rate_per_s"]
    )
    assert pipeline["pickup_ms"]["count"] == 3
    assert_ordered(pipeline["pickup_ms"])


def test_bench_refuses_a_target_that_is_not_on_this_machine():
    with pytest.raises(CommandError, match="on this machine"):
        call_command("bench", "--url", "http://example.com")


@pytest.mark.parametrize("scenario", ["pipeline", "streams"])
def test_bench_refuses_to_run_its_own_processes_against_a_running_service(scenario):
    with pytest.raises(CommandError, match=f"{scenario} starts .* cannot run"):
        call_command("bench", scenario, "--url", "http://127.0.0.1:9")


def test_bench_refuses_a_sweep_that_is_not_a_list_of_numbers():
    with pytest.raises(CommandError, match="--sizes must be numbers"):
        call_command("bench", "streams", "--sizes", "100,lots")


def test_bench_refuses_an_unknown_scenario():
    with pytest.raises(CommandError, match="unknown scenario 'placement'"):
        call_command("bench", "placement")


def test_bench_refuses_an_empty_plan():
    with pytest.raises(CommandError, match="--orders must be at least 1"):
        call_command("bench", "--orders", "0")


def test_bench_webhooks_reports_the_fast_endpoints_lateness_alone_and_beside_slow():
    report = run_bench("webhooks", "--webhook-orders", "10")

    webhooks = report["webhooks"]
    assert webhooks["plan"]["orders"] == 10
    for phase in ("baseline", "beside_slow"):
        figures = webhooks[phase]["fast_lateness_s"]
        assert figures["count"] == 10
        assert_ordered(figures)
    assert 0 <= webhooks["beside_slow"]["slow_received_by_then"] <= 10
