"""A throwaway PostgreSQL server for the tests: `initdb` + `pg_ctl` on a free 127.0.0.1 port, password
authentication (scram-sha-256) for one user, stopped and deleted at the end of the session.

PostgreSQL refuses to run as root, and the tests (like CI) often run as root: the cluster then belongs to the
unprivileged `nobody` user, in a private folder made for it under the system temporary directory (pytest's
own temporary folders are readable by their owner only, so `nobody` could not reach a cluster there).
No Unix socket is opened (`unix_socket_directories=''`), so nothing is written outside that folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "apt-get install postgresql (Debian/Ubuntu; binaries under /usr/lib/postgresql/<version>/bin)"
SERVICE_USER = "nobody"  # who owns the cluster when the tests run as root


def server_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: on PATH, or where Debian's packages put them."""
    candidates = [shutil.which("initdb"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)]
    for initdb in filter(None, candidates):
        folder = Path(initdb).resolve().parent
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    base: Path
    port: int
    user: str
    password: str

    def url(self, database: str, password: str | None = None, scheme: str = "postgresql") -> str:
        return f"{scheme}://{self.user}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its plain `postgresql://` URL (what users type)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def open_transactions(self, database: str) -> int:
        """How many sessions of `database` are inside a transaction that has written or locked rows (it has a
        transaction id), waiting for their client: a client stopped there (SIGSTOP) keeps those row locks until it
        resumes. (A transaction that has only read holds none that block another worker.)"""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as connection:
            return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state LIKE "
                                      "'idle in transaction%%' AND backend_xid IS NOT NULL", (database,)).fetchone()[0]

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        as_root = os.geteuid() == 0
        account = pwd.getpwnam(SERVICE_USER) if as_root else None
        result = subprocess.run(
            [str(self.bin_dir / program), *args], capture_output=True, text=True, timeout=60,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}, cwd=self.base,
            **({"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if as_root else {}))
        if result.returncode != 0:
            log = self.base / "server.log"
            detail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}\n{detail}")


def start_server(user: str = "tuner") -> PostgresServer:
    """Initialise and start a cluster whose only user is `user`, with a fresh random password."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")
    base = Path(tempfile.mkdtemp(prefix="lymphocytosis-pg-"))
    server = PostgresServer(bin_dir, base, free_port(), user, f"pw-{secrets.token_hex(8)}")
    pwfile = base / "pwfile"
    pwfile.write_text(server.password + "\n")
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVICE_USER)
        for path in (base, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    try:
        server._run("initdb", "-D", str(base / "data"), "-U", user, "--auth=scram-sha-256", f"--pwfile={pwfile}",
                    "--no-locale", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {server.port} -c unix_socket_directories='' -c fsync=off"
        server._run("pg_ctl", "-D", str(base / "data"), "-l", str(base / "server.log"), "-w", "-t", "60", "-o", options,
                    "start")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return server
