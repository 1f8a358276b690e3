"""A recording OutputSink, to check what a provider reports while the model writes."""

from collections.abc import Callable
from typing import Any


class RecordingSink:
    """Records every call in order, each with `clock()` at the time of the call
    (e.g. how many chunks a transport had sent), to say when it was reported."""

    def __init__(self, clock: Callable[[], Any] = lambda: None) -> None:
        self.clock = clock
        self.calls: list[tuple[str, Any, Any]] = []
        self.writers: list[str] = []  # the providers named by written_by, in order

    def restart(self) -> None:
        self.calls.append(("restart", None, self.clock()))

    def written_by(self, provider: Any) -> None:
        self.writers.append(provider.name)

    def text(self, delta: str) -> None:
        self.calls.append(("text", delta, self.clock()))

    def items(self, items: list[dict[str, Any]]) -> None:
        self.calls.append(("items", items, self.clock()))

    def answers(self) -> list[list[tuple[str, Any, Any]]]:
        """The calls split at each restart: one list per answer, the last one the
        current, as a sink that ignores a restart after nothing would see them."""
        answers: list[list[tuple[str, Any, Any]]] = []
        for call in self.calls:
            if call[0] == "restart":
                if not answers or answers[-1]:
                    answers.append([])
            else:
                assert answers, "reported before the first restart"
                answers[-1].append(call)
        return answers

    def texts(self) -> list[str]:
        """The current answer's text deltas."""
        return [value for kind, value, _ in self._current() if kind == "text"]

    def item_batches(self) -> list[list[dict[str, Any]]]:
        """The current answer's items() calls."""
        return [value for kind, value, _ in self._current() if kind == "items"]

    def reported_items(self) -> list[dict[str, Any]]:
        return [item for batch in self.item_batches() for item in batch]

    def _current(self) -> list[tuple[str, Any, Any]]:
        answers = self.answers()
        return answers[-1] if answers else []
