"""The optional dependencies, installed as the package's extras and imported only by
the features that need them:

* ``bounceback[postgres]``: asyncpg, for the PostgreSQL store (``[store] url``);
* ``bounceback[aiomqtt]``: aiomqtt (with paho), for ``[feed] client = "aiomqtt"``.

`config_problems` names what a configuration needs and cannot import, in the
``FILE: KEY: reason`` form of every other configuration problem, so that `check` and
`run` refuse it before anything starts."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from bounceback.config.settings import Config, ConfigProblem

# module -> the extra that installs it
EXTRAS: Final[dict[str, str]] = {"asyncpg": "postgres", "aiomqtt": "aiomqtt"}


class MissingExtra(ImportError):
    """An optional dependency a feature needs is not installed."""

    def __init__(self, module: str, feature: str) -> None:
        super().__init__(missing_text(module, feature), name=module)


def missing_text(module: str, feature: str) -> str:
    """``FEATURE needs the MODULE package: pip install 'bounceback[EXTRA]'``."""
    return f"{feature} needs the {module} package: pip install 'bounceback[{EXTRAS[module]}]'"


def require(module: str, feature: str) -> ModuleType:
    """The optional module, or a `MissingExtra` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module, feature) from exc


def config_problems(cfg: Config) -> list[ConfigProblem]:
    """One problem per optional dependency `cfg` needs and that cannot be imported."""
    from bounceback.config.settings import ConfigProblem

    needs: list[tuple[str, str, str]] = []
    if cfg.store.backend == "postgresql":
        needs.append(("store.url", "asyncpg", "PostgreSQL"))
    feed = cfg.feed
    if feed is not None and feed.enabled and feed.client == "aiomqtt":
        needs.append(("feed.client", "aiomqtt", "the aiomqtt client"))
    problems = []
    for key, module, feature in needs:
        try:
            importlib.import_module(module)
        except ImportError:
            problems.append(ConfigProblem(cfg.source, key, missing_text(module, feature)))
    return problems
