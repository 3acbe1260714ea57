"""The configuration reference table, generated from the config model.

Every key of every table comes from the attrs classes of `bounceback.config.settings` (their
fields and defaults) and its meaning from `config.FIELD_DOCS`, so the README's table
(between the markers below, rewritten by ``tools/config_reference.py``) cannot drift
from what the loader accepts. A field without a line in FIELD_DOCS is an error that
names it (`UndocumentedKeys`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs
from bounceback.config import settings as c

__all__ = [
    "END",
    "SECTIONS",
    "START",
    "UndocumentedKeys",
    "model_keys",
    "problems",
    "reference_table",
    "replace_block",
]

START: Final = "<!-- config-reference:start -->"
END: Final = "<!-- config-reference:end -->"

# (the table as the file writes it, its FIELD_DOCS key, its model class or None for
# [classify], whose keys are not attrs fields). In file order.
SECTIONS: Final[tuple[tuple[str, str, type[Any] | None], ...]] = (
    ("[server]", "server", c.ServerConfig),
    ("[[accounts]]", "accounts", c.Account),
    ("[[carriers]]", "carriers", c.Carrier),
    ("[[routes]]", "routes", c.Route),
    ("[retry]", "retry", c.RetryConfig),
    ("[retry.schedules.REASON]", "retry.schedules.REASON", c.Schedule),
    ("[classify]", "classify", None),
    ("[store]", "store", c.StoreConfig),
    ("[feed]", "feed", c.FeedConfig),
    ("[metrics]", "metrics", c.MetricsConfig),
    ("[admin]", "admin", c.AdminConfig),
    ("[[admin.tokens]]", "admin.tokens", c.AdminToken),
    ("[logging]", "logging", c.LoggingConfig),
)

# Defaults that read better in words than as the model's value.
_SHOWN: Final[Mapping[tuple[str, str], str]] = {
    ("server", "instance_id"): "derived",
    ("accounts", "allowed_ips"): "any",
    ("retry", "schedules"): "per reason",
    ("retry", "time_zones"): "none",
    ("retry.schedules.REASON", "initial"): "per reason",
    ("retry.schedules.REASON", "factor"): "per reason",
    ("retry.schedules.REASON", "max"): "per reason",
}
_CLASSIFY_KEYS: Final = ("include", "defaults", "carriers")


class UndocumentedKeys(Exception):
    """Keys of the model without a meaning in `config.FIELD_DOCS` (or lines there for
    keys the model no longer has)."""


def _fields(cls: type[Any] | None) -> list[attrs.Attribute[Any]] | list[str]:
    if cls is None:
        return list(_CLASSIFY_KEYS)
    return list(attrs.fields(cls))


def model_keys() -> Iterator[tuple[str, str]]:
    """Every (FIELD_DOCS table, key) the model accepts, in file order."""
    for _, section, cls in SECTIONS:
        for field in _fields(cls):
            yield section, field if isinstance(field, str) else field.name


def problems() -> list[str]:
    """What is missing from (or left over in) FIELD_DOCS, one line each."""
    out = []
    known = set(model_keys())
    for section, name in model_keys():
        if not c.FIELD_DOCS.get(section, {}).get(name, "").strip():
            out.append(
                f"[{section}] {name}: no meaning in FIELD_DOCS (proxy/config/settings.py): add a "
                f'line for it under "{section}"'
            )
    for section, docs in c.FIELD_DOCS.items():
        for name in docs:
            if (section, name) not in known:
                out.append(f"[{section}] {name}: in FIELD_DOCS but not a key of the model")
    for section, docs in c.FIELD_DOCS.items():
        for name, doc in docs.items():
            if "|" in doc or "\n" in doc:
                out.append(f"[{section}] {name}: one line without '|', please")
    return out


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, int | float):
        return c._num(value)
    if isinstance(value, str):
        return f"`{value}`" if value else "—"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return "—" if not value else ", ".join(f"{k} = {v}" for k, v in value.items())
    return str(value)


def _default(section: str, field: attrs.Attribute[Any] | str) -> str:
    name = field if isinstance(field, str) else field.name
    shown = _SHOWN.get((section, name))
    if shown is not None:
        return shown
    if isinstance(field, str):
        return "—"
    default: Any = field.default
    if default is attrs.NOTHING:
        return "required"
    factory = getattr(default, "factory", None)  # attrs.Factory(...)
    if factory is not None:
        return _value(factory())
    return _value(default)


def reference_table() -> str:
    """The Markdown table: table, key, default, meaning. Raises `UndocumentedKeys`."""
    missing = problems()
    if missing:
        raise UndocumentedKeys("\n".join(missing))
    lines = ["| table | key | default | meaning |", "|---|---|---|---|"]
    for label, section, cls in SECTIONS:
        first = True
        for field in _fields(cls):
            name = field if isinstance(field, str) else field.name
            doc = c.FIELD_DOCS[section][name]
            table = f"`{label}`" if first else ""
            lines.append(f"| {table} | `{name}` | {_default(section, field)} | {doc} |")
            first = False
    return "\n".join(lines) + "\n"


_BLOCK = re.compile(re.escape(START) + r"\n.*?" + re.escape(END), re.DOTALL)


def replace_block(text: str, table: str) -> str:
    """`text` (the README) with the table between the markers replaced by `table`."""
    if _BLOCK.search(text) is None:
        raise ValueError(f"no {START} ... {END} block")
    return _BLOCK.sub(lambda _: f"{START}\n{table}{END}", text, count=1)
