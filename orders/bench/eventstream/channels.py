from django_eventstream.channelmanager import DefaultChannelManager

STAFF_CHANNEL = "staff"


def order_channel(order_id: str) -> str:
    return f"order-{order_id}"


class OrderChannels(DefaultChannelManager):
    """An order's channel is open to anyone with its id (as our
    /api/orders/<id>/events is; this one does not look the order up); the staff
    channel needs a staff session."""

    def can_read_channel(self, user, channel):
        if channel == STAFF_CHANNEL:
            return user is not None and user.is_active and user.is_staff
        return True
