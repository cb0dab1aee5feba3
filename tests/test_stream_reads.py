"""The streams' reads, on SQLite and (Makefile, POSTGRES_TESTS) PostgreSQL: the
one statement an order stream opens with gives exactly what the ORM's replay
read gives."""

import pytest

from orders.live.events import read_order_opening, read_replay
from orders.live.opening import Refusal, open_stream
from orders.models import OrderEvent
from orders.state.transitions import append_event

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_order_opening_reads_exactly_what_the_replay_read_gives(place_order):
    order = place_order()
    append_event(order, OrderEvent.Type.DELIVERY_COMPLETED, detail='é \\ " \n\t')
    other = place_order()
    append_event(other, OrderEvent.Type.DELIVERY_COMPLETED)
    through = OrderEvent.objects.order_by("-pk").values_list("pk", flat=True)[0]

    order_pk, events = read_order_opening(order.order_id, through=through)

    assert order_pk == order.pk
    assert events == read_replay(after=0, through=through, order_pk=order.pk)
    assert [event.id for event in events] == list(
        order.events.order_by("pk").values_list("pk", flat=True)
    )


def test_an_order_opening_stops_at_the_pumps_cursor_and_at_the_page_size(place_order):
    order = place_order()
    for _ in range(4):
        append_event(order, OrderEvent.Type.DELIVERY_COMPLETED)
    ids = list(order.events.order_by("pk").values_list("pk", flat=True))

    _, up_to_third = read_order_opening(order.order_id, through=ids[2])
    _, first_two = read_order_opening(order.order_id, through=ids[-1], limit=2)

    assert [event.id for event in up_to_third] == ids[:3]
    assert [event.id for event in first_two] == ids[:2]


def test_an_order_with_nothing_to_replay_opens_and_an_unknown_one_is_a_404(
    place_order,
):
    order = place_order()
    assert read_order_opening(order.order_id, through=0) == (order.pk, [])
    assert read_order_opening("ord_nope", through=10**9) == (None, [])
    with pytest.raises(Refusal) as refused:
        open_stream(order_id="ord_nope", last_id=None, through=10**9)
    assert refused.value.status == 404
