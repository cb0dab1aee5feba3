import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.e2e


def run_bench(*args: str) -> dict:
    out = StringIO()
    call_command("bench", *args, "--timeout", "120", "--json", stdout=out)
    return json.loads(out.getvalue())


def assert_ordered(figures: dict) -> None:
    assert 0 <= figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]


def test_bench_service_measures_a_service_of_its_own_and_reports_every_figure():
    report = run_bench(
        "service",
        "--orders",
        "12",
        "--concurrency",
        "4",
        "--retry-orders",
        "3",
        "--streams",
        "4",
    )
    assert report["plan"]["scenarios"] == ["placing", "retries", "streams"]
    assert "pipeline" not in report
    assert report["completed"] + report["failed"] == 12
    assert report["place_latency_ms"]["count"] == 12
    assert report["baseline_latency_ms"]["count"] == 12
    assert report["place_vs_baseline"] == pytest.approx(
        report["place_rate_per_s"] / report["baseline_rate_per_s"]
    )
    assert report["time_to_complete_s"]["count"] == 12
    assert report["retry_lateness_s"]["count"] == 3
    assert report["streams_opened"] == 4
    assert report["event_latency_s"]["count"] >= 4
    for name in (
        "place_latency_ms",
        "baseline_latency_ms",
        "retry_lateness_s",
        "event_latency_s",
    ):
        assert_ordered(report[name])


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


def test_bench_refuses_to_run_the_pipeline_against_a_running_service():
    with pytest.raises(CommandError, match="cannot run against --url"):
        call_command("bench", "pipeline", "--url", "http://127.0.0.1:9")


def test_bench_refuses_an_unknown_scenario():
    with pytest.raises(CommandError, match="unknown scenario 'placement'"):
        call_command("bench", "placement")


def test_bench_refuses_an_empty_plan():
    with pytest.raises(CommandError, match="--orders must be at least 1"):
        call_command("bench", "--orders", "0")
