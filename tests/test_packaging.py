"""What an installed package offers beyond the source tree: the shipped configuration
files and presets, `bounceback init`, `--version`, `python -m bounceback`, and the
optional dependencies (extras) with the error that names the one to install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest
from bounceback import __version__
from bounceback.config.resources import configs_dir, example_text, preset_names, preset_path
from bounceback.config.settings import ConfigError, load_config
from bounceback.ops.cli import STARTER_PASSWORD_LINE, main
from harness import CONFIGS, free_port
from test_cli import BASE

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def run_module(*argv: str, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`python -m bounceback ARGV` in a child; the modules in `block` cannot be
    imported there (as when their extra is not installed)."""
    code = (
        "import runpy, sys\n"
        f"for name in {block!r}: sys.modules[name] = None\n"
        f"sys.argv = ['bounceback', *{list(argv)!r}]\n"
        "runpy.run_module('bounceback', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


# ---------------------------------------------------------------- shipped files


def test_the_shipped_configs_are_the_repositorys() -> None:
    assert configs_dir().resolve() == CONFIGS.resolve()
    assert preset_names() == ["map40-style", "twilio-style", "vonage-style"]
    # Every file in configs/ is package data (the wheel's globs cover them all).
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"]["bounceback.configs"] == "configs"
    assert "bounceback.configs" in setuptools["packages"]
    globs = setuptools["package-data"]["bounceback.configs"]
    shipped = {p for g in globs for p in CONFIGS.glob(g)}
    files = {p for p in CONFIGS.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files - shipped == {CONFIGS / "__init__.py"}  # a module: shipped as one


def test_the_web_console_ships_in_the_package() -> None:
    """Every file the console serves is package data, and the server knows each one."""
    from bounceback.admin.static import TYPES

    proxy = ROOT / "proxy"
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["bounceback"]
    shipped = {p for g in globs for p in proxy.glob(g)}
    files = set((proxy / "admin" / "console").iterdir())
    assert files and files <= shipped
    assert {p.name for p in files} == set(TYPES)


def test_license_and_metadata() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert project["requires-python"] == ">=3.11"
    versions = {
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert versions == {"3.11", "3.12", "3.13"}
    assert "Topic :: Communications :: Telephony" in project["classifiers"]
    assert "Framework :: AsyncIO" in project["classifiers"]
    assert project["urls"]


@pytest.mark.parametrize("style", ["vonage-style", "twilio-style", "map40-style"])
def test_a_preset_include_is_the_shipped_file(tmp_path: Path, style: str) -> None:
    """``preset:NAME`` reads the file from the installed package, wherever the config
    is; it classifies exactly as including the file by its path."""
    by_preset = tmp_path / "preset.toml"
    by_preset.write_text(BASE + f'[classify.carriers.a]\ninclude = ["preset:{style}"]\n')
    by_path = tmp_path / "path.toml"
    path = preset_path(style)
    assert path is not None and path.is_file()
    by_path.write_text(BASE + f'[classify.carriers.a]\ninclude = ["{path}"]\n')
    rules = load_config(by_preset).classify.for_carrier("a")
    assert rules == load_config(by_path).classify.for_carrier("a")
    assert rules["err_space"] == ("map40" if style == "map40-style" else "none")
    # The same from [classify.defaults].
    defaults = tmp_path / "defaults.toml"
    defaults.write_text(BASE + f'[classify.defaults]\ninclude = ["preset:{style}"]\n')
    assert load_config(defaults).classify.for_carrier("a")["err_space"] == rules["err_space"]


def test_an_unknown_preset_is_a_config_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + '[classify.carriers.a]\ninclude = ["preset:nope"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value) == (
        f'{cfg}: classify.carriers.a.include[0]: unknown preset "preset:nope" (the presets: '
        "preset:map40-style, preset:twilio-style, preset:vonage-style)"
    )


def test_the_example_and_the_presets_name_presets_not_paths() -> None:
    assert 'include = ["preset:vonage-style"]' in example_text()
    for name in preset_names():
        path = preset_path(name)
        assert path is not None
        assert f'include = ["preset:{name}"]' in path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- init


def test_init_writes_a_starter_that_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("ACME_SMPP_PASSWORD", "CARRIER_A_PASSWORD", "MQTT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "bounceback.toml"
    assert written.stat().st_mode & 0o777 == 0o600  # it holds passwords
    assert "bounceback check --config bounceback.toml" in out
    assert "bounceback run --config bounceback.toml" in out
    # Valid as written, without any environment; the sender's password is new.
    cfg = load_config(written, environ={})
    assert cfg.accounts[0].system_id == "app"
    assert cfg.accounts[0].password not in ("", "app-pw")
    assert len(cfg.accounts[0].password) == 8
    assert STARTER_PASSWORD_LINE not in written.read_text(encoding="utf-8")
    assert cfg.store.path == str(tmp_path / "bounceback.db")
    assert cfg.metrics is not None and cfg.feed is None
    assert main(["check", "--config", str(written)]) == 0
    # A second run refuses to overwrite it; --force does, with a new password.
    before = written.read_text(encoding="utf-8")
    assert main(["init"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert written.read_text(encoding="utf-8") == before
    assert main(["init", "--force"]) == 0
    assert written.read_text(encoding="utf-8") != before
    assert load_config(written, environ={}).accounts[0].password != cfg.accounts[0].password


def test_the_starters_commented_options_are_valid(tmp_path: Path) -> None:
    """Uncommenting the starter's optional lines (a preset, quiet hours, TLS) keeps it
    valid."""
    text = (CONFIGS / "starter.toml").read_text(encoding="utf-8")
    for line in (
        "# tls = true",
        '# quiet_hours_start = "21:00"',
        '# quiet_hours_end = "08:00"',
        "# [classify.carriers.carrier]",
        '# include = ["preset:vonage-style"]',
    ):
        assert line in text, line
        text = text.replace(line, line[2:])
    cfg = tmp_path / "starter.toml"
    cfg.write_text(text, encoding="utf-8")
    loaded = load_config(cfg, environ={})
    assert loaded.carriers[0].tls
    assert loaded.retry.quiet_hours() is not None
    assert loaded.classify.for_carrier("carrier")["err_space"] == "none"


def test_init_example_writes_the_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "example.toml"
    assert main(["init", "--example", "--output", str(out)]) == 1  # no such folder
    assert "cannot write" in capsys.readouterr().err
    out.parent.mkdir()
    assert main(["init", "--example", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (CONFIGS / "example.toml").read_text("utf-8")
    assert "ACME_SMPP_PASSWORD" in capsys.readouterr().out


# ---------------------------------------------------------------- version, python -m


def test_version_and_python_m() -> None:
    done = run_module("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bounceback {dist_version('bounceback')}"
    assert dist_version("bounceback") == __version__
    helped = subprocess.run(
        [sys.executable, "-m", "bounceback", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "init" in helped.stdout


# ---------------------------------------------------------------- extras


def test_the_extras_are_not_dependencies() -> None:
    project = PYPROJECT["project"]
    names = {d.split(">")[0].split("=")[0].split(";")[0].strip() for d in project["dependencies"]}
    assert not names & {"asyncpg", "aiomqtt", "paho-mqtt"}
    extras = project["optional-dependencies"]
    assert [d.split(">")[0] for d in extras["postgres"]] == ["asyncpg"]
    assert [d.split(">")[0] for d in extras["aiomqtt"]] == ["aiomqtt"]
    dev = {d.split(">")[0] for d in extras["dev"]}
    assert {"asyncpg", "aiomqtt"} <= dev  # the tests cover both options


def test_without_the_extras_everything_else_imports_and_runs(tmp_path: Path) -> None:
    """With asyncpg and aiomqtt (and paho) not importable, every module but the aiomqtt
    client imports, and a SQLite config checks."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    code = (
        "import importlib, pkgutil, sys\n"
        "for m in ('asyncpg', 'aiomqtt', 'paho', 'paho.mqtt'): sys.modules[m] = None\n"
        "import bounceback\n"
        "bad = []\n"
        "for m in pkgutil.walk_packages(bounceback.__path__, 'bounceback.'):\n"
        "    try: importlib.import_module(m.name)\n"
        "    except ImportError as exc: bad.append((m.name, str(exc)))\n"
        "print(bad)\n"
        "from bounceback.ops.cli import main\n"
        f"sys.exit(main(['check', '--config', {str(cfg)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first == (
        "[('bounceback.feed.aiomqtt_client', \"the aiomqtt client needs the aiomqtt package: "
        "pip install 'bounceback[aiomqtt]'\")]"
    )


@pytest.mark.parametrize(
    ("extra", "module", "key", "message"),
    [
        (
            '[store]\nurl = "postgresql://bb@db.example/bounceback"\n',
            "asyncpg",
            "store.url",
            "PostgreSQL needs the asyncpg package: pip install 'bounceback[postgres]'",
        ),
        (
            '[feed]\nclient = "aiomqtt"\n',
            "aiomqtt",
            "feed.client",
            "the aiomqtt client needs the aiomqtt package: pip install 'bounceback[aiomqtt]'",
        ),
    ],
    ids=["postgres", "aiomqtt"],
)
def test_a_config_that_needs_a_missing_extra_names_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: str,
    module: str,
    key: str,
    message: str,
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + extra)
    # Installed (the dev extras): valid.
    assert main(["check", "--config", str(cfg)]) == 0
    capsys.readouterr()
    # Not importable, as without the extra: check, run, stats and migrate refuse it.
    monkeypatch.setitem(sys.modules, module, None)
    assert main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{cfg}: {key}: {message}", "configuration is invalid: 1 problem"]
    for argv in (["run"], ["stats"], ["held", "list"], ["suppression", "list"]):
        assert main([*argv, "--config", str(cfg)]) == 2, argv
        assert capsys.readouterr().err.splitlines() == [f"{cfg}: {key}: {message}"], argv
    if module == "asyncpg":
        assert main(["migrate", "--config", str(cfg)]) == 2
        assert capsys.readouterr().err.splitlines() == [f"{cfg}: {key}: {message}"]


def test_run_without_asyncpg_in_a_fresh_process(tmp_path: Path) -> None:
    """The same in a process that never imported asyncpg: `bounceback run` exits 2
    with the one line before starting anything."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + '[store]\nurl = "postgresql://bb@db.example/bounceback"\n')
    done = run_module("run", "--config", str(cfg), block=("asyncpg",))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{cfg}: store.url: PostgreSQL needs the asyncpg package: "
        "pip install 'bounceback[postgres]'"
    ]
    assert done.stdout == ""


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_run_imports_only_what_the_config_uses(tmp_path: Path, event_loop: str) -> None:
    """`bounceback run` on a SQLite store with the builtin feed client (publishing on
    the proxy's loop) imports neither asyncpg nor aiomqtt nor paho, even though they
    are installed; uvloop only when it is the configured event loop."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[server]\nport = 0\nevent_loop = "{event_loop}"\n'
        + BASE.replace('host = "127.0.0.1"', f'host = "127.0.0.1"\nport = {free_port()}')
        + f"[store]\npath = {str(tmp_path / 'p.db')!r}\n"
        + f'[feed]\nclient = "builtin"\npublisher = "inline"\nport = {free_port()}\n'
        + "[metrics]\nenabled = false\n"
    )
    code = (
        "import atexit, runpy, sys\n"
        "def loaded():\n"
        "    names = ('asyncpg', 'aiomqtt', 'paho', 'uvloop')\n"
        "    found = sorted({m.split('.')[0] for m in sys.modules} & set(names))\n"
        "    print('loaded:', found, flush=True)\n"
        "atexit.register(loaded)\n"
        f"sys.argv = ['bounceback', 'run', '--config', {str(cfg)!r}]\n"
        "runpy.run_module('bounceback', run_name='__main__', alter_sys=True)\n"
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
    try:
        while "bounceback listening" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log.read_text(errors="replace")
    want = ["uvloop"] if event_loop == "uvloop" else []
    assert f"loaded: {want}" in text.splitlines(), text
