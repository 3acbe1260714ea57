"""The documented feed examples are valid against the shipped JSON Schemas, and the
README's configuration reference is the one generated from the config model."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import bounceback
import jsonschema
import pytest
from bounceback.config import reference as configref
from bounceback.config import settings as config
from bounceback.feed.events import EVENT_NAMES

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
    for name, kind in (
        ("status", "bounceback.status/1"),
        ("stats", "bounceback.stats/1"),
        ("admin", "bounceback.admin/1"),
    ):
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


# ---------------------------------------------------------------- configuration reference


def test_every_key_of_the_model_has_a_meaning() -> None:
    """A new field needs its one line in FIELD_DOCS (proxy/config/settings.py): the README's
    reference is generated from them."""
    assert configref.problems() == []


def test_the_readme_reference_is_generated_from_the_model() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        re.escape(configref.START) + r"\n(.*?)" + re.escape(configref.END), readme, re.DOTALL
    )
    assert found is not None, "README.md has no configuration reference block"
    assert found.group(1) == configref.reference_table(), (
        "the README's configuration reference differs from the model: "
        "run python tools/config_reference.py"
    )


def test_a_field_without_a_meaning_fails_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {k: dict(v) for k, v in config.FIELD_DOCS.items()}
    del docs["store"]["write_timeout"]
    docs["metrics"]["gone"] = "a key the model does not have"
    monkeypatch.setattr(config, "FIELD_DOCS", docs)
    problems = configref.problems()
    assert problems == [
        "[store] write_timeout: no meaning in FIELD_DOCS (proxy/config/settings.py): "
        'add a line for it under "store"',
        "[metrics] gone: in FIELD_DOCS but not a key of the model",
    ]
    with pytest.raises(configref.UndocumentedKeys, match="write_timeout"):
        configref.reference_table()


def test_the_reference_covers_every_table_of_the_model() -> None:
    tables = {section.split(".")[0] for _, section, _ in configref.SECTIONS}
    assert tables == {f.name for f in attrs.fields(config.Config)} - {"source"}


def test_every_key_the_model_accepts_is_in_the_example() -> None:
    raw = tomllib.loads((ROOT / "configs" / "example.toml").read_text(encoding="utf-8"))
    text = (ROOT / "configs" / "example.toml").read_text(encoding="utf-8")
    missing = []
    for section, key in configref.model_keys():
        if section == "retry.schedules.REASON":
            tables = list(raw["retry"]["schedules"].values())
        else:
            value: Any = raw
            for part in section.split("."):
                value = value.get(part, {}) if isinstance(value, dict) else {}
            tables = value if isinstance(value, list) else [value]
        # password and password_env (token and token_env) exclude each other: the
        # example shows one in a comment.
        commented = (section, key) in (("feed", "password"), ("admin.tokens", "token")) and (
            f'or {key} = "..."' in text
        )
        if not any(key in table for table in tables) and not commented:
            missing.append(f"[{section}] {key}")
    assert missing == [], "keys the model accepts but configs/example.toml lacks"
