"""Where an Optuna study lives, opened so that many tuning workers can share it safely.

- Any SQLAlchemy URL (SQLite, PostgreSQL, MySQL...), or a journal file (`journal:///path/study.log`, or a path
  ending in `.log`) for clusters without a database server.
- `postgresql://` (and `postgres://`), what users type, means the pinned psycopg 3 driver (`postgresql+psycopg`).
- Workers started together on a fresh database race to create Optuna's tables; the losers' `CREATE` fails
  (`UniqueViolation ... pg_type_typname_nsp_index` on PostgreSQL, "already exists", "database is locked").
  Opening retries on exactly those errors, after a short random pause, a bounded number of times: by then the
  winner's tables exist and the retry just finds them. Any other error (wrong password or host, missing driver)
  is one line, at once.
- The password is never shown: logs, errors and saved files show `passwords.masked(url)` (user:***@host).
- RDB storages record a heartbeat for running trials, so a worker killed mid-trial (kill -9, lost node) leaves
  a RUNNING trial that the next worker marks FAIL once its grace period has passed. (Journal files have no
  heartbeat in Optuna: a killed worker's trial stays RUNNING there, and is never counted as finished.)
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from pathlib import Path

import optuna

from ..defaults import DEFAULT_HEARTBEAT_S
from ..errors import InputError
from ..passwords import masked

log = logging.getLogger(__name__)

CREATE_ATTEMPTS = 8
CREATION_RACE_MESSAGES = ("already exists", "duplicate key", "unique constraint", "duplicate entry", "database is locked")
PG_CONNECT_TIMEOUT_S = 10  # a wrong host fails in seconds, not after the TCP timeout
DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient",
                   "pymysql": "PyMySQL"}


def journal_path(url: str) -> Path | None:
    """The journal file a `--storage` value names, or None for a SQLAlchemy URL."""
    if url.startswith("journal://"):
        return Path(url[len("journal://"):])
    if url.endswith(".log") and "://" not in url:
        return Path(url)
    return None


def storage_file(url: str) -> Path | None:
    """The file a `--storage` value writes (a journal file or a SQLite database), or None for a database server."""
    from sqlalchemy.engine import make_url

    path = journal_path(url)
    if path is not None:
        return path
    try:
        parsed = make_url(url)
    except Exception:  # refused with one line when opened
        return None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database)
    return None


def sqlalchemy_url(url: str) -> str:
    """The URL to hand to SQLAlchemy: plain `postgresql://` and `postgres://` mean the psycopg 3 driver."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InputError(f"--storage {masked(url)}: not a SQLAlchemy URL or journal file "
                         f"({masked(str(exc).splitlines()[0], url)})") from None
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def is_creation_race(exc: BaseException) -> bool:
    """True for the errors a concurrent `CREATE TABLE/TYPE` or schema stamp gives to the workers that lose."""
    from sqlalchemy import exc as sa_exc

    if not isinstance(exc, (sa_exc.IntegrityError, sa_exc.ProgrammingError, sa_exc.OperationalError)):
        return False
    message = str(exc).lower()
    return any(fragment in message for fragment in CREATION_RACE_MESSAGES)


def missing_driver_error(url: str, exc: ImportError) -> InputError:
    """One line naming the driver module that could not be imported, and the package that provides it."""
    cause = exc
    while cause.__cause__ is not None and isinstance(cause.__cause__, ImportError):
        cause = cause.__cause__
    module = (getattr(cause, "name", None) or "the database driver").split(".")[0]
    package = DRIVER_PACKAGES.get(module, module)
    return InputError(f"--storage {masked(url)}: cannot import the database driver module '{module}' "
                      f"(pip install '{package}', or pip install -r requirements.txt)")


def open_rdb(url: str, heartbeat_s: int | None) -> optuna.storages.RDBStorage:
    """An RDBStorage on `url`; table creation retried while it loses a creation race, other errors one line."""
    target = sqlalchemy_url(url)
    engine_kwargs = {"connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT_S}} if target.startswith("postgresql") else {}
    attempt = 0
    while True:
        attempt += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(target, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s)
        except ImportError as exc:
            raise missing_driver_error(url, exc) from None
        except Exception as exc:  # SQLAlchemy raises many types for bad URLs and unreachable servers
            if attempt >= CREATE_ATTEMPTS or not is_creation_race(exc):
                first_line = masked(str(exc).splitlines()[0] if str(exc) else "", url)
                raise InputError(f"--storage {masked(url)}: cannot open ({type(exc).__name__}: {first_line})") from None
        pause = random.uniform(0.05, 0.3) * attempt
        log.info("another worker is creating the study tables; retrying in %.2f s", pause)
        time.sleep(pause)


def open_journal(path: Path) -> optuna.storages.JournalStorage:
    """A journal file shared by several workers. Its writers take Optuna's symlink lock (atomic `symlink()`),
    which works on NFS v2 and later, where `fcntl` locks (SQLite's) often do not."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    check_journal(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileSymlinkLock(str(path))))
    except (ValueError, KeyError, TypeError) as exc:  # a record that is not JSON, or not one of Optuna's
        raise InputError(f"--storage {path}: damaged Optuna journal ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]})") from None


def check_journal(path: Path) -> None:
    """A journal file is new, empty or Optuna's: its first line one of Optuna's records. Anything else would get
    Optuna's records appended to it before the replay fails."""
    import json

    if path.exists() and not path.is_file():
        raise InputError(f"--storage {path}: exists and is not a file")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with open(path, "rb") as handle:
            record = json.loads(handle.readline(1 << 20))
    except (OSError, ValueError, RecursionError):
        record = None
    if not (isinstance(record, dict) and "op_code" in record):
        raise InputError(f"--storage {path}: not an Optuna journal file (its first line is no journal record); "
                         "give a new file")


def open_storage(url: str, heartbeat_s: int | None = DEFAULT_HEARTBEAT_S) -> optuna.storages.BaseStorage:
    """Open `--storage`: a journal file, or any SQLAlchemy URL (see the module docstring)."""
    path = journal_path(url)
    return open_journal(path) if path is not None else open_rdb(url, heartbeat_s)


def root_cause(exc: BaseException) -> BaseException:
    """The first exception of a chain (Optuna wraps SQLAlchemy's, which wraps the driver's: the driver's says
    "connection refused" or "password authentication failed")."""
    seen = {id(exc)}
    while (exc.__cause__ or exc.__context__) is not None and id(exc.__cause__ or exc.__context__) not in seen:
        exc = exc.__cause__ or exc.__context__
        seen.add(id(exc))
    return exc


def is_storage_failure(exc: BaseException) -> bool:
    """Did the database (or the driver's connection to it) fail, rather than our code?"""
    chain, current = [], exc
    while current is not None and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return any(isinstance(e, optuna.exceptions.StorageInternalError)
               or type(e).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "psycopg2") for e in chain)


def storage_failure(exc: BaseException, url: str, best_params) -> InputError | None:
    """One line naming the database failure's cause (masked), or None when `exc` is not one."""
    if not is_storage_failure(exc):
        return None
    cause = root_cause(exc)
    text = masked(str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__, url)
    return InputError(f"--storage {masked(url)}: the database failed during tuning ({text}); the finished trials are "
                      f"kept there and {best_params} holds the best of those this worker saw (or is unchanged); rerun "
                      "the same command to resume")
