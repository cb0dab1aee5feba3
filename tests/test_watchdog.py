from orders.watchdog import IDLE, PROCESSING, ClusterWatch


def always(value):
    return lambda: value


def test_a_healthy_cluster_is_never_restarted():
    watch = ClusterWatch(confirm_seconds=3)
    assert not watch.observe({1: IDLE, 2: IDLE}, 0, always(True))
    assert not watch.observe({1: PROCESSING, 2: IDLE}, 1, always(True))
    assert not watch.observe({1: IDLE, 2: IDLE}, 10, always(True))


def test_a_lost_idle_worker_with_orders_waiting_calls_for_a_restart():
    watch = ClusterWatch(confirm_seconds=3)
    watch.observe({1: IDLE, 2: IDLE}, 0, always(True))
    assert not watch.observe({2: IDLE, 3: IDLE}, 1, always(True))
    assert not watch.observe({2: IDLE, 3: IDLE}, 3, always(True))
    assert watch.observe({2: IDLE, 3: IDLE}, 4, always(True))


def test_a_worker_starting_a_task_after_the_loss_proves_the_queue_readable():
    watch = ClusterWatch(confirm_seconds=3)
    watch.observe({1: IDLE, 2: IDLE}, 0, always(True))
    watch.observe({2: IDLE, 3: IDLE}, 1, always(True))
    assert not watch.observe({2: PROCESSING, 3: IDLE}, 2, always(True))
    assert not watch.observe({2: IDLE, 3: IDLE}, 10, always(True))


def test_a_worker_busy_before_the_loss_proves_nothing_until_it_starts_anew():
    watch = ClusterWatch(confirm_seconds=3)
    watch.observe({1: IDLE, 2: PROCESSING}, 0, always(True))
    assert not watch.observe({2: PROCESSING, 3: IDLE}, 1, always(True))
    assert watch.observe({2: PROCESSING, 3: IDLE}, 4, always(True))


def test_a_busy_worker_killed_mid_task_is_no_reason_to_restart():
    watch = ClusterWatch(confirm_seconds=3)
    watch.observe({1: PROCESSING, 2: IDLE}, 0, always(True))
    assert not watch.observe({2: IDLE, 3: IDLE}, 1, always(True))
    assert not watch.observe({2: IDLE, 3: IDLE}, 10, always(True))


def test_without_waiting_orders_a_suspected_loss_waits_for_evidence():
    watch = ClusterWatch(confirm_seconds=3)
    watch.observe({1: IDLE, 2: IDLE}, 0, always(True))
    assert not watch.observe({2: IDLE, 3: IDLE}, 1, always(False))
    assert not watch.observe({2: IDLE, 3: IDLE}, 60, always(False))
    assert not watch.observe({2: IDLE, 3: IDLE}, 61, always(True))
    assert watch.observe({2: IDLE, 3: IDLE}, 64, always(True))
