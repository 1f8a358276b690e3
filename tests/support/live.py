"""A client of live content as DESIGN §5 asks clients to be: it applies a
snapshot whole and a delta only where its offset equals what it holds; here, a
delta that does not follow on fails the test (the server promises it never
sends one)."""

import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.events import assert_valid_event

LIVE_TYPES = ("content_snapshot", "content_delta")


@dataclass
class LiveClient:
    """What one client holds, per (concept_id, content_type)."""

    held: dict[tuple[str, str], Any] = field(default_factory=dict)
    attempts: dict[tuple[str, str], str] = field(default_factory=dict)
    snapshots: int = 0
    deltas: int = 0
    completed: set[tuple[str, str]] = field(default_factory=set)

    def apply(self, event: dict[str, Any]) -> None:
        assert_valid_event(event)
        pair = (event.get("concept_id"), event.get("content_type"))
        if event["type"] == "concept_complete":
            self.completed.add(pair)
            return
        if event["type"] not in LIVE_TYPES:
            return
        assert pair not in self.completed, f"live content after concept_complete: {event}"
        assert event["id"] is None and event["seq"] is None, event
        kind = "text" if "text" in event else "items"
        if event["type"] == "content_snapshot":
            self.snapshots += 1
            held = "" if kind == "text" else []
            assert event["offset"] == 0, event
        else:
            self.deltas += 1
            held = self.held[pair]
            assert self.attempts[pair] == event["attempt_id"], event
            assert event["offset"] == len(held), (
                f"delta at {event['offset']} while the client holds {len(held)}"
            )
        self.held[pair] = held + event[kind]
        self.attempts[pair] = event["attempt_id"]

    def apply_text(self, text: str) -> dict[str, Any]:
        event = json.loads(text)
        self.apply(event)
        return event
