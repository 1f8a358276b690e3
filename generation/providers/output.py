"""The model's output formats: the JSON schema structured output is asked to
follow, and how an answer's text becomes a TutorialDraft, ResourceList or Quiz
(InvalidOutput when it cannot)."""

import re
from typing import Any

import pydantic

from generation.providers.base import InvalidOutput
from generation.schemas import TutorialDraft

SUMMARY_MAX_CHARS = 500
TITLE_MAX_CHARS = 300
# JSON Schema keywords that strict structured output accepts (the rest, such as
# minLength or format "uri", are enforced by pydantic after the answer arrives).
STRICT_SCHEMA_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "$defs", "$ref", "description", "title", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "pattern",
    "format",
}  # fmt: skip
STRICT_STRING_FORMATS = {
    "date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid",
}  # fmt: skip


def strict_json_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the subset strict structured output accepts:
    every object closed and every property required, unsupported keywords dropped."""
    return _strict(model.model_json_schema())


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(entry) for entry in node]
    if not isinstance(node, dict):
        return node
    strict: dict[str, Any] = {}
    for key, value in node.items():
        if key not in STRICT_SCHEMA_KEYWORDS:
            continue
        if key == "format" and value not in STRICT_STRING_FORMATS:
            continue
        if key in {"properties", "$defs"}:
            strict[key] = {name: _strict(schema) for name, schema in value.items()}
        else:
            strict[key] = _strict(value)
    if strict.get("type") == "object":
        strict["additionalProperties"] = False
        strict["required"] = list(strict.get("properties", {}))
    return strict


def parse_json[Parsed: pydantic.BaseModel](text: str, schema: type[Parsed]) -> Parsed:
    """The answer validated against `schema`; InvalidOutput says what is wrong, so
    the re-ask can tell the model."""
    try:
        return schema.model_validate_json(text)
    except pydantic.ValidationError as exc:
        raise InvalidOutput(_validation_summary(exc)) from exc


def _validation_summary(exc: pydantic.ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'answer'}: {error['msg']}"
        for error in exc.errors(include_input=False)[:5]
    ]
    return "the answer does not match the schema (" + "; ".join(problems) + ")"


def parse_tutorial(text: str, *, fallback_title: str) -> TutorialDraft:
    """Title from the leading heading, summary from the first prose paragraph, and the
    whole Markdown as the body. Raises InvalidOutput when there is nothing to keep."""
    markdown = _without_code_fence(text.strip())
    if not markdown:
        raise InvalidOutput("the tutorial is empty")
    first_line, _, rest = markdown.partition("\n")
    heading = re.fullmatch(r"#{1,6}\s+(.+)", first_line.strip())
    title = fallback_title
    if heading:
        title = heading.group(1).strip().rstrip("#").strip() or fallback_title
    else:
        rest = markdown
    blocks = [block.strip() for block in re.split(r"\n\s*\n", rest) if block.strip()]
    summary = next((block for block in blocks if _is_prose(block)), "")
    if not summary:
        raise InvalidOutput("the tutorial has no summary paragraph after its title")
    return TutorialDraft(
        title=_shorten(title, TITLE_MAX_CHARS),
        summary=_shorten(" ".join(summary.split()), SUMMARY_MAX_CHARS),
        markdown=markdown + "\n",
    )


def _without_code_fence(text: str) -> str:
    lines = text.splitlines()
    if len(lines) >= 2 and lines[0].startswith("```") and lines[-1].strip() == "```":
        return "\n".join(lines[1:-1]).strip()
    return text


def _is_prose(block: str) -> bool:
    return not re.match(r"(#|```|~~~|\||>|[-*+]\s|\d+[.)]\s)", block)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip() + "…"
