import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.e2e


def test_bench_measures_a_service_of_its_own_and_reports_every_figure():
    out = StringIO()
    call_command(
        "bench",
        "--orders",
        "12",
        "--concurrency",
        "4",
        "--retry-orders",
        "3",
        "--streams",
        "4",
        "--timeout",
        "120",
        "--json",
        stdout=out,
    )
    report = json.loads(out.getvalue())
    assert report["completed"] + report["failed"] == 12
    assert report["place_latency_ms"]["count"] == 12
    assert report["time_to_complete_s"]["count"] == 12
    assert report["retry_lateness_s"]["count"] == 3
    assert report["streams_opened"] == 4
    assert report["event_latency_s"]["count"] >= 4
    for name in ("place_latency_ms", "retry_lateness_s", "event_latency_s"):
        figures = report[name]
        assert 0 <= figures["p50"] <= figures["p95"] <= figures["max"]


def test_bench_refuses_a_target_that_is_not_on_this_machine():
    with pytest.raises(CommandError, match="on this machine"):
        call_command("bench", "--url", "http://example.com")


def test_bench_refuses_an_empty_plan():
    with pytest.raises(CommandError, match="--orders must be at least 1"):
        call_command("bench", "--orders", "0")
