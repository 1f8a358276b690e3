"""daphne 4.2.3 drops the reason of a WebSocket close (`handle_reply` passes only
the code on; django/daphne#374), and the event streams' 4410 carries in its reason
the cursor a client resumes from (docs/events.md). Until daphne sends it, a close
with a reason is sent here, through autobahn's `sendClose(code, reason)`, which
daphne's own `serverClose` calls without one."""

from typing import Any

from daphne.ws_protocol import WebSocketProtocol

upstream_handle_reply = WebSocketProtocol.handle_reply


def handle_reply(self: WebSocketProtocol, message: dict[str, Any]) -> None:
    if (
        message.get("type") == "websocket.close"
        and message.get("reason")
        and self.state != self.STATE_CONNECTING
    ):
        self.sendClose(code=message.get("code") or 1000, reason=message["reason"])
        return
    upstream_handle_reply(self, message)


def apply() -> None:
    """Idempotent: the entry point may be imported more than once."""
    WebSocketProtocol.handle_reply = handle_reply
