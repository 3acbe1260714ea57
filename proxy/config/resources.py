"""The configuration files that ship inside the package (`bounceback.configs`, the
repository's `configs/` folder): the starter and example configurations, the
classification presets and the carrier simulator's scenarios.

A classification preset is named in a config as ``preset:NAME`` (``[classify]
include = ["preset:vonage-style"]``), which reads ``configs/classify/NAME.toml``
from the installed package, wherever that is."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Final

PRESET_PREFIX: Final = "preset:"


def configs_dir() -> Path:
    """The folder of the shipped configuration files."""
    root = importlib.resources.files("bounceback.configs")
    # An installed or editable package is a folder on disk; the config loader reads
    # files by path.
    return Path(str(root))


def preset_names() -> list[str]:
    """The classification presets, sorted: ``map40-style``, ``twilio-style``, …"""
    return sorted(p.stem for p in (configs_dir() / "classify").glob("*.toml"))


def preset_path(name: str) -> Path | None:
    """The file of the preset `name` (without ``preset:``), None when there is none."""
    if name not in preset_names():
        return None
    return configs_dir() / "classify" / f"{name}.toml"


def starter_text() -> str:
    """The commented starter configuration `bounceback init` writes."""
    return (configs_dir() / "starter.toml").read_text(encoding="utf-8")


def example_text() -> str:
    """The example configuration with every key (`bounceback init --example`)."""
    return (configs_dir() / "example.toml").read_text(encoding="utf-8")
