"""A throwaway PostgreSQL cluster for the store tests.

`PgCluster` runs `initdb` into a temporary folder and `pg_ctl start` on a free
port (TCP on 127.0.0.1, its socket in the same folder, no fsync), using the
server binaries of the newest PostgreSQL under /usr/lib/postgresql (or the
folder in $PG_BINDIR, or whatever `pg_config --bindir` or PATH offers).
PostgreSQL refuses to run as root, so under root the cluster runs as the
`postgres` user (or `nobody`) and the folder is handed to that user.

Use it from a test module with ``pytest_plugins = ["pg_fixture"]``:

* `pg_cluster` (session): the running cluster; its template database
  `bb_template` holds Bounceback's migrated schema;
* `pg_url`: a fresh database made from that template, dropped after the test;
* `pg_empty_url`: a fresh database with no schema at all (for migration tests).

Missing PostgreSQL binaries fail the tests that need them; they never skip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from bounceback.store.postgres import PgStore, migrate
from harness import free_port

TEMPLATE_DB = "bb_template"


def pg_bindir() -> Path:
    """The folder holding initdb, pg_ctl and psql; raises when PostgreSQL is missing."""
    env = os.environ.get("PG_BINDIR")
    candidates: list[Path] = [Path(env)] if env else []

    def version(p: str) -> tuple[int, ...]:
        name = Path(p).parent.name
        return tuple(int(x) for x in name.split(".") if x.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)][
        ::-1
    ]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    for c in candidates:
        if all((c / tool).is_file() for tool in ("initdb", "pg_ctl", "psql")):
            return c
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl, psql) not found: install the"
        " `postgresql` package or set PG_BINDIR"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and no `postgres` or `nobody` user to run PostgreSQL as")


class PgCluster:
    """One PostgreSQL server in a temporary folder."""

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="bb-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.started = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, LC_ALL="C", PGTZ="UTC")
        as_user: dict[str, Any] = {}
        if self.user is not None:  # PostgreSQL refuses to run as root
            env["HOME"] = str(self.dir)
            as_user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run(
            args,
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            **as_user,
        )

    def start(self) -> None:
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        try:
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            )
            options = (
                f"-k {self.dir} -h 127.0.0.1 -p {self.port} -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            )
        except subprocess.CalledProcessError as exc:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.cleanup()
            raise RuntimeError(
                f"PostgreSQL did not start: {exc.cmd[0]} said {exc.stderr or exc.stdout}{tail}"
            ) from exc
        self.started = True

    def stop(self) -> None:
        if self.started:
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
                check=False,
            )
            self.started = False
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql (synchronous, for fixtures)."""
        out = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PGCONNECT_TIMEOUT="10"),
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def create_database(self, template: str = "template0") -> str:
        """A new database copied from `template`; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_async_migrate(url: str) -> list[str]:
    """Run `migrate` on an event loop of its own (fixtures may be inside a running loop)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, migrate(url)).result(timeout=120)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    try:
        cluster = PgCluster()
        cluster.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.psql(f'CREATE DATABASE "{TEMPLATE_DB}" TEMPLATE template0')
        _run_async_migrate(cluster.url(TEMPLATE_DB))
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    name = pg_cluster.create_database(TEMPLATE_DB)
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_empty_url(pg_cluster: PgCluster) -> Iterator[str]:
    name = pg_cluster.create_database("template0")
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
async def pg_store_pair(pg_url: str) -> AsyncIterator[tuple[PgStore, PgStore]]:
    """Two stores on one fresh database, as two instances would have."""
    a = PgStore(pg_url, batch_delay=0.001, pool_min=1, pool_max=6)
    b = PgStore(pg_url, batch_delay=0.001, pool_min=1, pool_max=6)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
