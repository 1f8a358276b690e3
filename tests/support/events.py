"""The event contract as the tests check it: docs/event.schema.json and a validator."""

import json
from pathlib import Path

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "event.schema.json"
EVENT_SCHEMA = json.loads(SCHEMA_PATH.read_text())
event_validator = jsonschema.Draft202012Validator(EVENT_SCHEMA)


def assert_valid_event(event: dict) -> None:
    """Fail with every schema violation of one event, not just the first."""
    errors = sorted(event_validator.iter_errors(event), key=lambda error: list(error.path))
    assert not errors, f"{event.get('type')} violates the schema: " + "; ".join(
        f"{'/'.join(map(str, error.path)) or '<root>'}: {error.message}" for error in errors
    )
