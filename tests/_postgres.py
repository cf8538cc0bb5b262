"""A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` in a temporary folder.

    def test_x(postgres_url: str) -> None:     # a fresh, empty database on a session server
        ...

The server listens on 127.0.0.1 at a free port (trust authentication, fsync off) and is removed
at the end of the session. PostgreSQL refuses to run as root, so under root it runs as the
`postgres` user (or `nobody`). Without the server binaries the tests are skipped; `.ci/run`
installs Debian's `postgresql` package when they are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 60


def find_binary(name: str) -> str | None:
    """`name` on PATH, else in Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version, reverse=True)
    return candidates[0] if candidates else None


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in `root`, started with `start()` and removed with `stop()`."""

    def __init__(self, root: Path, initdb: str, pg_ctl: str) -> None:
        self.root, self.initdb, self.pg_ctl = root, initdb, pg_ctl
        self.data, self.log = root / "data", root / "server.log"
        self.port = _free_port()
        self.user = _server_user()

    def start(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(START_TIMEOUT_S), "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its `postgresql://` URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user is not None else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, cwd=self.root, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}{done.stdout}{log}"
            )


def _server_user() -> str | None:
    """The user the server runs as: none needed unless the tests run as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a 'postgres' nor a 'nobody' user")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (skip when its binaries are not installed)."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
            "postgresql package (.ci/run does) to run the PostgreSQL tests"
        )
    root = Path(tempfile.mkdtemp(prefix="regzoo-pg-"))
    server = PostgresServer(root, initdb, pg_ctl)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's server, as a `postgresql://` URL."""
    return postgres_server.create_database()
