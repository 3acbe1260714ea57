"""The documented feed examples are valid against the shipped JSON Schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import bounceback
import jsonschema
from bounceback.events import EVENT_NAMES

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(bounceback.__file__).parent / "schema"


def schema(name: str) -> jsonschema.Draft202012Validator:
    doc: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(doc)


def examples(path: Path) -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", path.read_text(), re.DOTALL)
    return [json.loads(b) for b in blocks]


def test_every_event_has_a_valid_example_in_the_docs() -> None:
    docs = examples(ROOT / "docs" / "events.md")
    events = [d for d in docs if d.get("schema") == "bounceback.event/1"]
    validator = schema("event")
    for doc in events:
        validator.validate(doc)
    assert {d["event"] for d in events} == set(EVENT_NAMES)
    for name, kind in (("status", "bounceback.status/1"), ("stats", "bounceback.stats/1")):
        found = [d for d in docs if d.get("schema") == kind]
        assert found, name
        for doc in found:
            schema(name).validate(doc)


def test_the_readme_example_is_valid() -> None:
    docs = examples(ROOT / "README.md")
    events = [d for d in docs if d.get("schema") == "bounceback.event/1"]
    assert events
    for doc in events:
        schema("event").validate(doc)
