"""The container files, tested without a container engine.

* The Dockerfile: base image, non-root user, every COPY source exists in the repo,
  ENTRYPOINT + CMD form a valid `bounceback` command whose config (the image's copy
  of docker/bounceback.toml) passes `bounceback check`, and the HEALTHCHECK command
  succeeds against a running proxy and fails when nothing listens.
* The compose file: parsed (by `docker compose config` when the Compose plugin is
  there, by PyYAML when installed, and always by a small parser for the YAML subset
  the file is written in), then checked service by service.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from bounceback.cli import build_parser, cmd_run, cmd_simulate
from bounceback.config import load_config
from harness import free_port, gateway, simulator, write_config

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
IMAGE_CONFIG = "/etc/bounceback/bounceback.toml"
ENV = {"BOUNCEBACK_ACME_PASSWORD": "acme-secret", "CARRIER_SIM_PASSWORD": "sim-pw"}


# ---------------------------------------------------------------- Dockerfile


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return out


def one(word: str) -> str:
    found = [args for w, args in instructions() if w == word]
    assert len(found) == 1, f"{word}: {found}"
    return found[0]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    out = []
    for word, args in instructions():
        if word != "COPY":
            continue
        parts = shlex.split(args)
        if any(p.startswith("--from=") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        out.append((parts[:-1], parts[-1]))
    return out


def image_path_to_repo(path: str) -> Path:
    """The repository file that the image has at `path` (through the COPY lines)."""
    for sources, dest in copies():
        if len(sources) == 1 and dest == path:
            return ROOT / sources[0]
        if len(sources) == 1 and path.startswith(dest.rstrip("/") + "/"):
            return ROOT / sources[0] / path[len(dest.rstrip("/")) + 1 :]
    raise AssertionError(f"nothing in the image at {path}")


def bounceback_script() -> Path:
    """The console script pip installed next to this interpreter."""
    path = Path(sys.executable).parent / "bounceback"
    assert path.is_file(), "bounceback is not installed in this environment"
    return path


def test_dockerfile_base_user_ports_and_copies() -> None:
    froms = [args for w, args in instructions() if w == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    user = one("USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    # Every file or folder copied from the build context exists in the repository.
    srcs = [src for sources, _ in copies() for src in sources]
    assert {"pyproject.toml", "codecs", "proxy", "docker/bounceback.toml"} <= set(srcs)
    for src in srcs:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    # The build context is filtered by docker/Dockerfile.dockerignore ("*" then
    # exceptions): everything copied must be let through.
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    for src in srcs:
        parts = Path(src).parts
        assert any("/".join(parts[:i]) in allowed for i in range(1, len(parts) + 1)), src
    # pyproject's readme is needed by the package build.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["readme"] in srcs
    assert project["scripts"]["bounceback"] == "bounceback.cli:main"
    exposed = set(one("EXPOSE").split())
    metrics_port = load_config(DOCKER / "bounceback.toml", environ=ENV).metrics
    assert metrics_port is not None
    assert exposed == {"2775", str(metrics_port.port)}


def test_entrypoint_and_cmd_run_the_image_config() -> None:
    argv = exec_form(one("ENTRYPOINT")) + exec_form(one("CMD"))
    assert argv == ["bounceback", "run", "--config", IMAGE_CONFIG]
    args = build_parser().parse_args(argv[1:])
    assert args.func is cmd_run and args.config == IMAGE_CONFIG
    source = image_path_to_repo(IMAGE_CONFIG)
    assert source == DOCKER / "bounceback.toml"
    script = str(bounceback_script())
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    help_run = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert help_run.returncode == 0 and "run" in help_run.stdout
    # The image's command, with `check` for `run`, on the image's config.
    check = subprocess.run(
        [script, "check", "--config", str(source)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**env, **ENV},
    )
    assert check.returncode == 0, check.stderr
    assert "configuration is valid" in check.stdout
    assert "Feed: MQTT 3.1.1 at mosquitto:1883" in check.stdout
    assert "sim: simulator:2776" in check.stdout
    assert ENV["BOUNCEBACK_ACME_PASSWORD"] not in check.stdout
    # Without its environment the config names the missing variable (exit 2).
    bare = subprocess.run(
        [script, "check", "--config", str(source)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert bare.returncode == 2 and "BOUNCEBACK_ACME_PASSWORD" in bare.stderr


def test_image_config_store_and_postgres_option(tmp_path: Path) -> None:
    cfg = load_config(DOCKER / "bounceback.toml", environ=ENV)
    assert cfg.store.backend == "sqlite" and cfg.store.path.startswith("/var/lib/bounceback/")
    assert "VOLUME" in dict(instructions()) and "/var/lib/bounceback" in one("VOLUME")
    assert cfg.feed is not None and cfg.feed.host == "mosquitto"
    assert cfg.metrics is not None and cfg.metrics.host == "0.0.0.0"
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 2775
    # The commented PostgreSQL line is a working shared-store option.
    text = (DOCKER / "bounceback.toml").read_text()
    commented = re.search(r"^# (url = \"postgresql://[^\"]+@postgres:5432/[^\"]+\")$", text, re.M)
    assert commented is not None
    enabled = tmp_path / "bounceback.toml"
    enabled.write_text(text.replace(commented.group(0), commented.group(1)))
    pg = load_config(enabled, environ=ENV)
    assert pg.store.backend == "postgresql"


async def test_healthcheck_command_against_a_running_proxy(tmp_path: Path) -> None:
    hc = one("HEALTHCHECK")
    assert "--interval=" in hc
    cmd = exec_form(hc[hc.index("CMD ") + 4 :])
    cfg = load_config(DOCKER / "bounceback.toml", environ=ENV)
    assert cfg.metrics is not None
    url = f"http://127.0.0.1:{cfg.metrics.port}/healthz"
    assert cmd[0] == "python" and url in cmd[-1]

    async def run(port: int) -> int:
        here = f"http://127.0.0.1:{port}/healthz"
        argv = [sys.executable, *(c.replace(url, here) for c in cmd[1:])]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return await asyncio.wait_for(proc.wait(), 30)

    extra = '[metrics]\nhost = "127.0.0.1"\nport = 0\n'
    async with (
        simulator() as sim,
        gateway(write_config(tmp_path, sim.port or 0, extra=extra)) as gw,
    ):
        assert gw.metrics is not None
        assert await run(gw.metrics.port) == 0
    assert await run(free_port()) != 0  # nothing listening: unhealthy


# ---------------------------------------------------------------- compose


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("["):
        assert text.endswith("]"), text
        inner, items, cur, quote = text[1:-1], [], "", ""
        for ch in inner:
            if quote:
                cur += ch
                if ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
                cur += ch
            elif ch == ",":
                items.append(_scalar(cur))
                cur = ""
            else:
                cur += ch
        if cur.strip():
            items.append(_scalar(cur))
        return items
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        assert text.endswith("'")
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    if text in ("", "null", "~"):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


class MiniYaml:
    """Block mappings, block sequences, flow sequences, quoted and plain scalars and
    `|` literals: the YAML subset docker/compose.yaml is written in."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.i = 0

    @staticmethod
    def _indent(line: str) -> int:
        return len(line) - len(line.lstrip(" "))

    def _peek(self) -> tuple[int, str] | None:
        while self.i < len(self.lines):
            line = self.lines[self.i]
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                assert "\t" not in line[: self._indent(line) + 1], "tabs in indentation"
                return self._indent(line), stripped
            self.i += 1
        return None

    def parse(self) -> Any:
        nxt = self._peek()
        assert nxt is not None
        value = self._block(nxt[0])
        assert self._peek() is None, f"unparsed line {self.i + 1}: {self.lines[self.i]!r}"
        return value

    def _block(self, indent: int) -> Any:
        nxt = self._peek()
        assert nxt is not None and nxt[0] == indent
        if nxt[1] == "-" or nxt[1].startswith("- "):
            return self._sequence(indent)
        return self._mapping(indent)

    def _value(self, rest: str, indent: int) -> Any:
        if rest == "|":
            return self._literal(indent)
        if rest:
            return _scalar(rest)
        nxt = self._peek()
        if nxt is not None and nxt[0] > indent:
            return self._block(nxt[0])
        return None

    def _mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (nxt := self._peek()) is not None and nxt[0] == indent:
            text = nxt[1]
            if text.startswith("- "):
                break
            m = re.fullmatch(r"([A-Za-z0-9_.-]+):(?:\s+(.*))?", text)
            assert m is not None, f"line {self.i + 1}: not a mapping entry: {text!r}"
            key = m.group(1)
            assert key not in out, f"duplicate key {key}"
            self.i += 1
            out[key] = self._value((m.group(2) or "").strip(), indent)
        return out

    def _sequence(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (nxt := self._peek()) is not None and nxt[0] == indent:
            text = nxt[1]
            if not (text == "-" or text.startswith("- ")):
                break
            item = text[1:].strip()
            if re.match(r"[A-Za-z0-9_.-]+:(\s|$)", item):
                # "- key: value" opens a mapping at the item's column.
                self.lines[self.i] = " " * (indent + 2) + item
                out.append(self._mapping(indent + 2))
            else:
                self.i += 1
                out.append(self._value(item, indent))
        return out

    def _literal(self, indent: int) -> str:
        body: list[str] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and self._indent(line) <= indent:
                break
            body.append(line)
            self.i += 1
        while body and not body[-1].strip():
            body.pop()
        cut = min(self._indent(b) for b in body if b.strip())
        return "\n".join(b[cut:] for b in body) + "\n"


def compose_documents() -> list[dict[str, Any]]:
    """The compose file as every available parser reads it (all must agree)."""
    text = (DOCKER / "compose.yaml").read_text()
    docs: list[dict[str, Any]] = [MiniYaml(text).parse()]
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        pass
    else:
        docs.append(yaml.safe_load(text))
    assert all(d == docs[0] for d in docs)
    return docs


def test_mini_yaml_reads_what_yaml_means() -> None:
    sample = (
        'a:\n  b: 1\n  c: "x: y"\n  d: [\'p\', "q"]\n  e:\n    - one\n    - k: v\n'
        "      w: 2\n  f: |\n    line 1\n      line 2\n  g: true\n# comment\nh:\n"
    )
    assert MiniYaml(sample).parse() == {
        "a": {
            "b": 1,
            "c": "x: y",
            "d": ["p", "q"],
            "e": ["one", {"k": "v", "w": 2}],
            "f": "line 1\n  line 2\n",
            "g": True,
        },
        "h": None,
    }


def test_compose_services() -> None:
    for doc in compose_documents():
        services = doc["services"]
        assert set(services) == {"bounceback", "mosquitto", "postgres", "simulator"}
        bb = services["bounceback"]
        assert bb["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (DOCKER / bb["build"]["context"] / bb["build"]["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile"
        )
        assert "profiles" not in bb
        assert {"2775:2775", "9102:9102"} <= set(bb["ports"])
        assert any(v.endswith(":/var/lib/bounceback") for v in bb["volumes"])
        assert set(ENV) <= set(bb["environment"])
        # The config's hosts are these services' names.
        cfg = load_config(DOCKER / "bounceback.toml", environ=ENV)
        assert cfg.feed is not None and cfg.feed.host in services
        assert cfg.carriers[0].host in services and cfg.carriers[0].port == 2776

        mq = services["mosquitto"]
        assert mq["image"].startswith("eclipse-mosquitto:2")
        conf = doc["configs"][mq["configs"][0]["source"]]["content"].splitlines()
        assert "listener 1883" in conf and "allow_anonymous true" in conf
        assert mq["configs"][0]["target"] == "/mosquitto/config/mosquitto.conf"

        pg = services["postgres"]
        assert pg["image"].startswith("postgres:16")
        env = pg["environment"]
        assert env.get("POSTGRES_HOST_AUTH_METHOD") == "trust" or "POSTGRES_PASSWORD" in env

        sim = services["simulator"]
        assert sim["profiles"] == ["simulator"]
        args = build_parser().parse_args(sim["command"])
        assert args.func is cmd_simulate
        assert (args.host, args.port) == ("0.0.0.0", 2776)
        assert args.scenario == "/etc/bounceback/scenarios/demo.toml"
        assert image_path_to_repo(args.scenario).is_file()
        assert set(doc["volumes"]) >= {v.split(":")[0] for v in bb["volumes"]}


def test_docker_compose_config_when_available() -> None:
    """`docker compose config` validates the file against the Compose schema where the
    plugin exists; elsewhere the structural checks above are what runs, and this test
    checks that the raw text has no construct the subset parser skipped."""
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
        have_compose = probe.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        have_compose = False
    if have_compose:
        res = subprocess.run(
            [
                "docker",
                "compose",
                "-f",
                str(DOCKER / "compose.yaml"),
                "--profile",
                "simulator",
                "config",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **ENV},
        )
        assert res.returncode == 0, res.stderr
        assert set(json.loads(res.stdout)["services"]) == {
            "bounceback",
            "mosquitto",
            "postgres",
            "simulator",
        }
    text = (DOCKER / "compose.yaml").read_text()
    for n, line in enumerate(text.splitlines(), 1):
        assert "\t" not in line, f"line {n}: tab"
        # No anchors, aliases, tags, merge keys or flow mappings.
        code = line.split(" #")[0]
        assert not re.search(r"[&*!]\w|<<:|(^|[:-]\s+)\{", code.strip()), f"line {n}: {line}"
