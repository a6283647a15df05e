"""Connecting a WebsocketCommunicator and telling acceptance from refusal."""

from __future__ import annotations

from typing import Any

from channels.testing import WebsocketCommunicator


async def outcome(communicator: WebsocketCommunicator) -> Any:
    """"accept" when the consumer stays open, else its close code (refusals accept first and
    then close with an application code, so the browser learns why)."""
    connected, code = await communicator.connect()
    if not connected:
        return code
    if await communicator.receive_nothing(timeout=0.2):
        await communicator.disconnect()
        return "accept"
    message = await communicator.receive_output()
    if message["type"] == "websocket.close":
        return message.get("code")
    await communicator.disconnect()
    return "accept"
