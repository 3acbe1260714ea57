"""The container files, tested without a container engine.

* The Dockerfile: base image, non-root user, every COPY source exists in the repo,
  ENTRYPOINT + CMD form a valid `bounceback` command whose config (the image's copy
  of docker/bounceback.toml) passes `bounceback check`, and the HEALTHCHECK command
  (`bounceback health`) succeeds against a running proxy and fails when nothing
  listens; the dependencies are installed in a layer of their own.
* The build context's .dockerignore lets through what the image copies, nothing more.
* The compose file: parsed (by `docker compose config` when the Compose plugin is
  there, by PyYAML when installed, and always by a small parser for the YAML subset
  the file is written in), then checked service by service; its Mosquitto
  configuration refuses anonymous clients (checked against a real Mosquitto).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import attrs
import pytest
from bounceback.config.settings import load_config
from bounceback.feed.client import MqttClient, MqttError
from bounceback.ops.cli import (
    CommandError,
    build_parser,
    cmd_health,
    cmd_run,
    cmd_simulate,
    health_probe,
)
from harness import free_port, gateway, simulator, write_config
from mqtt_broker import mosquitto_binary

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
IMAGE_CONFIG = "/etc/bounceback/bounceback.toml"
ENV = {
    "BOUNCEBACK_ACME_PASSWORD": "acme-secret",
    "CARRIER_SIM_PASSWORD": "sim-pw",
    "MQTT_PASSWORD": "mqtt-secret",
}


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
    # The build context (the repository root) is filtered by its .dockerignore ("*"
    # then exceptions): everything copied must be let through, and nothing else.
    assert not (DOCKER / "Dockerfile.dockerignore").exists()  # it would take precedence
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    for src in srcs:
        parts = Path(src).parts
        assert any("/".join(parts[:i]) in allowed for i in range(1, len(parts) + 1)), src
    for entry in allowed:  # nothing is sent that no COPY uses
        assert any(s == entry or s.startswith(entry + "/") for s in srcs), entry
    # pyproject's readme is needed by the package build.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["readme"] in srcs
    assert project["scripts"]["bounceback"] == "bounceback.ops.cli:main"
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


def test_dependencies_have_a_layer_of_their_own(tmp_path: Path) -> None:
    """The build stage copies pyproject.toml alone and installs the dependencies from
    it before copying the code, so a code change reuses that layer; the list it
    installs is the project's dependencies and both extras."""
    build: list[tuple[str, str]] = []
    for word, args in instructions():
        if word == "FROM" and build:
            break
        build.append((word, args))
    steps = [(w, a) for w, a in build if w in ("COPY", "RUN")]
    first_code = next(i for i, (w, a) in enumerate(steps) if w == "COPY" and "proxy" in a)
    deps = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "requirements" in a)
    assert steps[deps - 1] == ("COPY", "pyproject.toml ./")
    assert deps < first_code
    assert "--no-deps" in next(a for w, a in steps[first_code:] if w == "RUN")
    # Run the step's Python (the part that writes the list) on the real pyproject.toml.
    command = steps[deps][1].split(" && ")[0].strip()
    assert command.startswith("python -c ") and command.endswith(" > /tmp/requirements.txt")
    # As the image's shell runs it, with the list on standard output.
    script = shlex.quote(sys.executable) + command[len("python") : -len(" > /tmp/requirements.txt")]
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    done = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert done.stdout.splitlines() == [
        *project["dependencies"],
        *extras["postgres"],
        *extras["aiomqtt"],
    ]


def health_argv() -> list[str]:
    hc = one("HEALTHCHECK")
    assert "--interval=" in hc
    return exec_form(hc[hc.index("CMD ") + 4 :])


def test_healthcheck_is_bounceback_health_on_the_image_config() -> None:
    argv = health_argv()
    assert argv == ["bounceback", "health", "--config", IMAGE_CONFIG]
    args = build_parser().parse_args(argv[1:])
    assert args.func is cmd_health
    cfg = load_config(image_path_to_repo(IMAGE_CONFIG), environ=ENV)
    # The image's config has [metrics] on every interface: probed on the loopback.
    assert cfg.metrics is not None and cfg.metrics.host == "0.0.0.0"
    with_port = attrs.evolve(cfg, metrics=attrs.evolve(cfg.metrics, port=free_port()))
    healthy, detail = health_probe(with_port, 3.0)
    assert not healthy and detail.startswith(
        f"http://127.0.0.1:{with_port.metrics.port}/healthz: "  # type: ignore[union-attr]
    )


async def run_health(config: Path) -> tuple[int, str]:
    """`bounceback health --config CONFIG` as the image runs it (the console script)."""
    proc = await asyncio.create_subprocess_exec(
        str(bounceback_script()),
        "health",
        "--config",
        str(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_health_against_a_running_proxy(tmp_path: Path) -> None:
    """With [metrics], GET /healthz on the configured port; without, an enquire_link
    on the SMPP port. Healthy (0) while the proxy runs, unhealthy (1) once it stopped."""
    extra = '[metrics]\nhost = "127.0.0.1"\nport = 0\n'
    async with simulator() as sim:
        async with gateway(write_config(tmp_path, sim.port or 0, extra=extra)) as gw:
            assert gw.metrics is not None and gw.port
            # The proxy started with free ports; health reads the config, so give it
            # one naming the ports taken.
            by_metrics = write_config(
                tmp_path,
                sim.port or 0,
                port=gw.port,
                extra=f'[metrics]\nhost = "0.0.0.0"\nport = {gw.metrics.port}\n',
                name="metrics.toml",
            )
            by_smpp = write_config(tmp_path, sim.port or 0, port=gw.port, name="smpp.toml")
            rc, out = await run_health(by_metrics)
            assert (rc, out) == (
                0,
                f"healthy: http://127.0.0.1:{gw.metrics.port}/healthz: HTTP 200\n",
            )
            rc, out = await run_health(by_smpp)
            assert (rc, out) == (0, f"healthy: SMPP 127.0.0.1:{gw.port}: enquire_link answered\n")
        for config in (by_metrics, by_smpp):
            rc, out = await run_health(config)
            assert rc == 1 and out.startswith("unhealthy: "), out
    # An invalid configuration: exit 2, the problem printed.
    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\nport = -1\n")
    rc, out = await run_health(broken)
    assert rc == 2 and "broken.toml: server.port" in out


def test_health_with_nothing_to_check(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, free_port(), port=free_port()))
    assert cfg.metrics is None
    tls_only = attrs.evolve(cfg, server=attrs.evolve(cfg.server, plain=False))
    with pytest.raises(CommandError) as info:
        health_probe(tls_only, 1.0)
    assert info.value.code == 2 and "add a [metrics] table" in str(info.value)
    any_port = attrs.evolve(cfg, server=attrs.evolve(cfg.server, port=0))
    with pytest.raises(CommandError) as info:
        health_probe(any_port, 1.0)
    assert info.value.code == 2 and "server.port = 0" in str(info.value)


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


def compose_documents(name: str = "compose.yaml") -> list[dict[str, Any]]:
    """A compose file of docker/ as every available parser reads it (all must agree)."""
    text = (DOCKER / name).read_text()
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
        # Prometheus and Grafana: profile "monitoring" (tests/test_monitoring.py).
        assert set(services) == {
            "bounceback",
            "mosquitto",
            "postgres",
            "simulator",
            "prometheus",
            "grafana",
        }
        bb = services["bounceback"]
        assert bb["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (DOCKER / bb["build"]["context"] / bb["build"]["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile"
        )
        assert "profiles" not in bb
        # SMPP for senders everywhere; metrics on the loopback only.
        assert set(bb["ports"]) == {"2775:2775", "127.0.0.1:9102:9102"}
        assert any(v.endswith(":/var/lib/bounceback") for v in bb["volumes"])
        assert set(ENV) <= set(bb["environment"])
        # The config's hosts are these services' names.
        cfg = load_config(DOCKER / "bounceback.toml", environ=ENV)
        assert cfg.feed is not None and cfg.feed.host in services
        assert cfg.carriers[0].host in services and cfg.carriers[0].port == 2776
        # An init as PID 1, and a stop that waits out the proxy's own deadline
        # (shutdown_grace + 10 s, see docs/operations.md) with room to spare.
        assert bb["init"] is True
        grace = re.fullmatch(r"(\d+)s", bb["stop_grace_period"])
        assert grace is not None
        assert int(grace.group(1)) >= cfg.server.shutdown_grace + 10 + 5
        # The health check is the image's: `bounceback health` on the image's config,
        # which reads the port from it (nothing fixed to 9102 in it).
        hc = bb["healthcheck"]
        assert hc["test"] == ["CMD", *health_argv()]
        assert not any("9102" in part for part in hc["test"])

        mq = services["mosquitto"]
        assert mq["image"].startswith("eclipse-mosquitto:2")
        conf = doc["configs"][mq["configs"][0]["source"]]["content"].splitlines()
        assert "listener 1883" in conf and "allow_anonymous false" in conf
        assert "password_file /mosquitto/data/passwd" in conf
        assert mq["configs"][0]["target"] == "/mosquitto/config/mosquitto.conf"
        # Published on the loopback only; the feed logs in as the password file's user.
        assert mq["ports"] == ["127.0.0.1:1883:1883"]
        assert cfg.feed.username == "bounceback" and cfg.feed.password == ENV["MQTT_PASSWORD"]
        assert "mosquitto_passwd -b -c /mosquitto/data/passwd bounceback" in mq["command"][0]
        assert set(mq["environment"]) == {"MQTT_PASSWORD"}

        pg = services["postgres"]
        assert pg["image"].startswith("postgres:16")
        env = pg["environment"]
        assert env.get("POSTGRES_HOST_AUTH_METHOD") == "trust" or "POSTGRES_PASSWORD" in env

        assert "ports" not in pg  # the compose network only

        sim = services["simulator"]
        assert sim["profiles"] == ["simulator"]
        args = build_parser().parse_args(sim["command"])
        assert args.func is cmd_simulate
        assert (args.host, args.port) == ("0.0.0.0", 2776)
        assert args.scenario == "/etc/bounceback/scenarios/demo.toml"
        assert image_path_to_repo(args.scenario).is_file()
        assert set(doc["volumes"]) >= {v.split(":")[0] for v in bb["volumes"]}


def test_compose_mosquitto_refuses_anonymous_clients() -> None:
    """The broker service's start command and configuration, run by a local Mosquitto
    with only the paths and the port changed: the password file is written, anonymous
    clients are refused and the feed's user gets in."""
    if os.geteuid() != 0:
        pytest.skip("the service's command runs as root (it hands the file to mosquitto)")
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user, as in the image")
    (doc,) = compose_documents()[:1]
    mq = doc["services"]["mosquitto"]
    conf_text = doc["configs"][mq["configs"][0]["source"]]["content"]
    # A folder the broker's user can reach (pytest's own are private to root).
    folder = Path(tempfile.mkdtemp(prefix="bb-mosquitto-"))
    folder.chmod(0o755)
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        conf_text.replace("/mosquitto/data/", f"{folder}/")
        .replace("listener 1883", f"listener {port} 127.0.0.1")
        .replace("persistence true", "persistence false")
    )
    # Compose turns "$$" into "$" for the shell.
    command = (
        mq["command"][0]
        .replace("$$", "$")
        .replace("/mosquitto/data/", f"{folder}/")
        .replace("/mosquitto/config/mosquitto.conf", str(conf))
        # The image's entrypoint hands /mosquitto to the broker's user and runs it.
        .replace("exec /docker-entrypoint.sh mosquitto ", f"exec {mosquitto_binary()} ")
    )
    assert mq["entrypoint"] == ["/bin/sh", "-c"]
    log = folder / "log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            env={**os.environ, "MQTT_PASSWORD": ENV["MQTT_PASSWORD"]},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        async def main() -> None:
            for _ in range(500):  # until it listens (or exits)
                if proc.poll() is not None:
                    raise AssertionError(log.read_text(errors="replace"))
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.02)
            anonymous = MqttClient("127.0.0.1", port, client_id="anon")
            with pytest.raises(MqttError, match="not authorized"):
                await asyncio.wait_for(anonymous.connect(), 30)
            async with MqttClient(
                "127.0.0.1",
                port,
                client_id="feed",
                username="bounceback",
                password=ENV["MQTT_PASSWORD"],
            ) as feed:
                await asyncio.wait_for(feed.publish("bounceback/v1/x", b"1", qos=1), 30)

        asyncio.run(main())
        passwd = folder / "passwd"
        assert passwd.stat().st_mode & 0o077 == 0
        assert passwd.stat().st_uid == pwd.getpwnam("mosquitto").pw_uid
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


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


# ================================================================ several instances


def haproxy_servers() -> list[tuple[str, str, int, int]]:
    """(name, host, port, check port) of each server line of docker/haproxy.cfg."""
    servers = []
    for line in (DOCKER / "haproxy.cfg").read_text().splitlines():
        m = re.fullmatch(r"\s*server (\S+) (\S+):(\d+) check port (\d+)\b.*", line)
        if m:
            servers.append((m.group(1), m.group(2), int(m.group(3)), int(m.group(4))))
    return servers


def test_compose_scale_services() -> None:
    cfg = load_config(DOCKER / "bounceback-shared.toml", environ=ENV)
    for doc in compose_documents("compose.scale.yaml"):
        services = doc["services"]
        instances = {"bounceback-a", "bounceback-b"}
        assert set(services) == {
            "haproxy",
            "postgres",
            "simulator",
            *instances,
            "prometheus",  # these two: profile "monitoring" (tests/test_monitoring.py)
            "grafana",
        }
        # The shared config's hosts are this file's services; the store is shared.
        assert cfg.store.backend == "postgresql"
        assert urllib.parse.urlsplit(cfg.store.url).hostname in services
        assert cfg.carriers[0].host in services and cfg.carriers[0].port == 2776
        assert cfg.server.instance_id == ""  # derived from each instance's host name
        for name in instances:
            bb = services[name]
            assert bb["hostname"] == name  # distinct instance names
            (mount,) = bb["configs"]
            assert doc["configs"][mount["source"]]["file"] == "./bounceback-shared.toml"
            args = build_parser().parse_args(bb["command"])
            assert args.func is cmd_run and args.config == mount["target"]
            assert bb["healthcheck"]["test"] == [
                "CMD",
                "bounceback",
                "health",
                "--config",
                mount["target"],
            ]
            assert bb["init"] is True
            grace = re.fullmatch(r"(\d+)s", bb["stop_grace_period"])
            assert grace is not None
            assert int(grace.group(1)) >= cfg.server.shutdown_grace + 10 + 5
            assert "ports" not in bb  # senders come through HAProxy
            assert set(bb["environment"]) == {"BOUNCEBACK_ACME_PASSWORD", "CARRIER_SIM_PASSWORD"}
        hp = services["haproxy"]
        assert hp["ports"] == [f"{cfg.server.port}:2775"]
        assert doc["configs"][hp["configs"][0]["source"]]["file"] == "./haproxy.cfg"
    # HAProxy sends binds to the instances' SMPP port and checks each one's /readyz.
    assert cfg.metrics is not None
    servers = haproxy_servers()
    assert {s[1] for s in servers} == {"bounceback-a", "bounceback-b"}
    assert all(port == cfg.server.port for _, _, port, _ in servers)
    assert all(check == cfg.metrics.port for _, _, _, check in servers)
    text = (DOCKER / "haproxy.cfg").read_text()
    assert "mode tcp" in text and "option httpchk GET /readyz" in text
    assert "http-check expect status 200" in text


def test_haproxy_config_is_valid() -> None:
    """`haproxy -c` where the binary is (CI installs it); the instances' names do not
    resolve outside compose, which the configuration allows (init-addr none)."""
    exe = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if exe is None:
        pytest.skip("haproxy is not installed (.ci/run installs it)")
    res = subprocess.run(
        [exe, "-c", "-f", str(DOCKER / "haproxy.cfg")], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    assert "Configuration file is valid" in res.stdout + res.stderr
