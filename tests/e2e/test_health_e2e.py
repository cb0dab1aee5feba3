"""/healthz on a real daphne with the Redis broker: a load balancer asks every few
seconds, so the check reuses the process's one broker connection instead of
opening one per request. The Redis is a redis-server of this module's own, so
the connections it counts are the stack's alone."""

import os

import httpx
import pytest

from tests.e2e.test_scale_out_multi import RedisServer, redis_server_missing
from tests.stack import make_stack

pytestmark = pytest.mark.e2e

REQUESTS = 300


def connections_received(url: str) -> int:
    import redis

    client = redis.from_url(url)
    try:
        return client.info("stats")["total_connections_received"]
    finally:
        client.close()


@pytest.fixture
def web_on_redis(tmp_path):
    """daphne on a SQLite file and this module's Redis (broker and channels
    layer); no qcluster, whose own connections would count too."""
    missing = redis_server_missing()
    if missing:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(missing)
    redis = RedisServer(tmp_path)
    redis.start()
    stack = make_stack(tmp_path, REDIS_URL=redis.url)
    try:
        stack.migrate()
        stack.start_web()
        yield stack, redis
    finally:
        stack.stop()
        redis.stop()


def test_healthz_reuses_one_broker_connection(web_on_redis):
    stack, redis = web_on_redis
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        # The first answers open what the process keeps (the broker's pool).
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        before = connections_received(redis.url)

        answers = [client.get("/healthz") for _ in range(REQUESTS)]

    assert {answer.status_code for answer in answers} == {200}
    assert answers[-1].json() == {"status": "ok", "database": "ok", "queue": "ok"}
    # Counting itself connects once.
    assert connections_received(redis.url) - before <= 3
