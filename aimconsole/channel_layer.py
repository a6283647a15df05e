"""The channel layer: channels_redis's pub/sub layer, plus the clean-up its consumers miss.

channels_redis forgets a consumer's channel (the in-process queue of its messages and its Redis
subscription) only when a ``receive()`` of that channel is cancelled while it waits. Channels'
dispatch loop does not always leave one waiting when a consumer stops: when a group message has
just arrived (the receive task is done, its message not yet dispatched) or the next receive has
not started yet, the disconnect stops the consumer, nothing is cancelled mid-wait, and the
channel stays in the layer for the life of the process: its queue, the messages still in it,
its Redis subscription (channels_redis issue #276). Under the live streams (telemetry, fleet
heartbeats) nearly every disconnect falls in that window: replays of 50 sockets on a 125-node
fleet left all 50 channels behind each time, with the snapshots still queued for them, and
daphne's private memory grew by megabytes per replay (15-21 MiB at the issue's scale), for good.

``PubSubChannelLayer.clean_channel`` forgets a channel for good (queue, group memberships,
subscriptions), and ``ReleasesChannel`` makes a consumer call it when it stops, however it
stops. Other layers (the in-memory one of the tests) have no ``clean_channel``: nothing to do.
"""

from __future__ import annotations

from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer


class PubSubChannelLayer(RedisPubSubChannelLayer):
    """``channels_redis.pubsub.RedisPubSubChannelLayer`` with ``clean_channel``."""

    async def clean_channel(self, channel: str) -> None:
        """Forget ``channel`` in this event loop's layer: its queue (and the messages it still
        holds), its place in every group, and the Redis subscriptions nobody needs any more."""
        layer = self._get_layer()
        stale = []
        for group_channel, members in list(layer.groups.items()):
            if channel in members:
                members.discard(channel)
                if not members:
                    del layer.groups[group_channel]
                    stale.append(group_channel)
        if layer.channels.pop(channel, None) is not None:
            stale.append(channel)
        for name in stale:
            await layer._get_shard(name).unsubscribe(name)


class ReleasesChannel:
    """Consumer mixin (before the Channels consumer class): when the consumer stops, its
    channel is cleaned from the layer (``PubSubChannelLayer.clean_channel``)."""

    channel_layer: Any
    channel_name: str

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            clean = getattr(self.channel_layer, "clean_channel", None) if getattr(self, "channel_layer", None) else None
            if clean is not None and getattr(self, "channel_name", None):
                await clean(self.channel_name)
