"""The systemd unit in deploy/systemd/: its keys, read with a small parser everywhere,
and `systemd-analyze verify` where that tool exists."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bounceback.config.settings import ServerConfig
from bounceback.ops.cli import build_parser, cmd_check, cmd_run

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "bounceback.service"
STATE = "/var/lib/bounceback"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a key may repeat), as systemd reads a unit file:
    comments start with # or ;, continuation lines end in a backslash."""
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {n}: {raw!r}"
            name = line[1:-1]
            assert name not in out, f"line {n}: section [{name}] twice"
            section = out[name] = {}
            continue
        assert section is not None, f"line {n}: a key outside any section"
        key, eq, value = line.partition("=")
        assert eq and key.strip() == key and key, f"line {n}: not KEY=VALUE: {raw!r}"
        section.setdefault(key, []).append(value.strip())
    assert not pending, "the file ends in a continuation line"
    return out


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}: {values}"
    return values[0]


def test_parse_unit_reads_what_systemd_means() -> None:
    sample = "# c\n[Unit]\nA=1\n; c\n[Service]\nB=x \\\n  y\nB=z\nC=\n"
    assert parse_unit(sample) == {"Unit": {"A": ["1"]}, "Service": {"B": ["x y", "z"], "C": [""]}}


def test_unit_keys() -> None:
    unit = parse_unit(UNIT.read_text(encoding="utf-8"))
    assert set(unit) == {"Unit", "Service", "Install"}
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(unit, "Unit", "After")
    # The start: `check` first, then `run`, on one configuration.
    assert one(unit, "Service", "Type") == "simple"
    check = shlex.split(one(unit, "Service", "ExecStartPre"))
    run = shlex.split(one(unit, "Service", "ExecStart"))
    assert check[0] == run[0] and Path(check[0]).name == "bounceback"
    check_args = build_parser().parse_args(check[1:])
    run_args = build_parser().parse_args(run[1:])
    assert check_args.func is cmd_check and run_args.func is cmd_run
    assert check_args.config == run_args.config == "/etc/bounceback/bounceback.toml"
    # `systemctl reload`: SIGHUP to the proxy, which reads its configuration again.
    assert shlex.split(one(unit, "Service", "ExecReload")) == ["/bin/kill", "-HUP", "$MAINPID"]
    # The stop: SIGTERM to the proxy, which stops its child itself; systemd waits
    # longer than the proxy's own deadline (shutdown_grace + 10 s, docs/operations.md).
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    assert one(unit, "Service", "KillMode") == "mixed"
    stop = one(unit, "Service", "TimeoutStopSec")
    assert stop.isdigit() and int(stop) >= ServerConfig().shutdown_grace + 10 + 5
    # Restarts on failures, not on an invalid configuration (exit 2).
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartPreventExitStatus") == "2"
    # A dedicated user and the hardening.
    user = one(unit, "Service", "User")
    assert user == "bounceback" and one(unit, "Service", "Group") == "bounceback"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "bounceback",
        "CapabilityBoundingSet": "",
    }.items():
        assert one(unit, "Service", key) == value, key
    # The store's folder is the one writable place, and the working directory.
    assert one(unit, "Service", "ReadWritePaths").split() == [STATE]
    assert "/var/lib/" + one(unit, "Service", "StateDirectory") == STATE
    assert one(unit, "Service", "WorkingDirectory") == STATE


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (the unit's keys are checked above)")
    # verify insists that ExecStart's program exists: point it at this environment's.
    script = Path(sys.executable).parent / "bounceback"
    assert script.is_file()
    text = UNIT.read_text(encoding="utf-8").replace("/opt/bounceback/bin/bounceback", str(script))
    unit = tmp_path / "bounceback.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    # verify exits 0 on unknown keys and bad values too; it reports them on stderr.
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
