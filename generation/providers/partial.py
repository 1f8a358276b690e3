"""Items of a structured answer (resources, questions) reported to an OutputSink as
the model completes them, read from the partial JSON while it streams.

While an answer streams, every item of its array but the last is complete; the
last one is complete only when the answer is whole. Each item is validated with
its own schema and reported once; reporting stops at the first invalid item (the
answer will fail as a whole and be re-asked). The partial JSON is parsed only
after a chunk that could have closed an item (a "}"), until that close shows as a
new item, so the work stays about linear in the answer's length."""

import typing
from typing import Any

import jiter
import pydantic

from generation.providers.base import OutputSink


def item_field(schema: type[pydantic.BaseModel]) -> tuple[str, type[pydantic.BaseModel]]:
    """The name and item model of the schema's one list of models (ResourceList:
    "items" of Resource; Quiz: "questions" of Question)."""
    found = []
    for name, field in schema.model_fields.items():
        if typing.get_origin(field.annotation) is list:
            [item] = typing.get_args(field.annotation)
            if isinstance(item, type) and issubclass(item, pydantic.BaseModel):
                found.append((name, item))
    if len(found) != 1:
        raise TypeError(f"{schema.__name__} has no single list of items to stream")
    return found[0]


class StreamedItems:
    """Reports one structured answer's items at a time, as they complete; `restart`
    before each answer, `received` per chunk of text, `whole` once it is parsed."""

    def __init__(self, output: OutputSink, schema: type[pydantic.BaseModel]) -> None:
        self.output = output
        self.key, self.item = item_field(schema)
        self._forget()

    def restart(self) -> None:
        """A new answer begins: what was reported for the last one is void."""
        self.output.restart()
        self._forget()

    def _forget(self) -> None:
        self._parts: list[str] = []
        self._reported: list[dict[str, Any]] = []
        self._closing = False  # a "}" arrived that no parse has accounted for yet
        self._stopped = False

    def received(self, delta: str) -> None:
        if self._stopped:
            return
        self._parts.append(delta)
        self._closing = self._closing or "}" in delta
        if not self._closing:
            return
        text = "".join(self._parts)
        self._parts = [text]
        items = self._partial_items(text)
        if items is None:
            return
        complete = items[:-1]
        if len(complete) > len(self._reported):
            self._closing = False
            self._report(complete[len(self._reported) :])

    def whole(self, parsed: pydantic.BaseModel) -> None:
        """The answer is whole and valid: report what is left, so that the items
        reported since the restart are exactly the parsed ones, in order."""
        final = [item.model_dump(mode="json") for item in getattr(parsed, self.key)]
        if self._reported != final[: len(self._reported)]:
            self.output.restart()  # not expected: the partial reading went astray
            self._reported = []
        if rest := final[len(self._reported) :]:
            self._reported.extend(rest)
            self.output.items(rest)

    def _partial_items(self, text: str) -> list[Any] | None:
        """The answer's array so far, or None when there is none (yet). An answer
        that cannot become valid JSON of the expected shape stops the reporting."""
        try:
            value = jiter.from_json(text.encode(), partial_mode="on")
        except ValueError:
            self._stopped = bool(text.strip())
            return None
        if not isinstance(value, dict):
            self._stopped = True
            return None
        items = value.get(self.key)
        if items is not None and not isinstance(items, list):
            self._stopped = True
            return None
        return items

    def _report(self, raw_items: list[Any]) -> None:
        valid = []
        for raw in raw_items:
            try:
                valid.append(self.item.model_validate(raw).model_dump(mode="json"))
            except pydantic.ValidationError:
                self._stopped = True
                break
        if valid:
            self._reported.extend(valid)
            self.output.items(valid)
