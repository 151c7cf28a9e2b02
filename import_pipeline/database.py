"""The leads database as a resource: configured by URL or embedded, its schema brought up to date once."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import sqlalchemy

from import_pipeline import schema
from import_pipeline.config import LOAD_POOL
from import_pipeline.embedded_server import restart_if_stopped, start_embedded_server


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


# Imports write leads one at a time (they wait for each other, never for the application, which
# never takes this lock): what one import matched cannot be inserted by another under it.
IMPORTS_LOCK = 7_246_002


def wait_for_other_imports(cur: psycopg.Cursor, log=None) -> None:
    """Hold the imports' lock until commit; only another import's load is waited for, however long."""
    cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (IMPORTS_LOCK,))
    if one_value(cur):
        return
    if log is not None:
        log.info("load: waiting for another import to finish writing leads")
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (IMPORTS_LOCK,))


def one_value(cur: psycopg.Cursor) -> Any:
    """The first column of the one row the cursor's last statement returned."""
    row = cur.fetchone()
    assert row is not None, "the statement returned no row"
    return row[0]


@cache
def migrate_once(conninfo: str) -> None:
    """Bring the database's schema up to date, once per process."""
    with psycopg.connect(conninfo) as conn:
        schema.migrate(conn)


class LeadsDatabase(dg.ConfigurableResource):
    """The PostgreSQL database that holds leads: `url` when set, else the embedded server in `home`."""

    url: str = ""
    home: str = ""
    # How long a load keeps trying through transient errors (a restarting server, lost races) before the
    # run fails; `import-pipeline retry` resumes it.
    retry_seconds: int = 120
    embedded_server: int = 0  # 1: `url` is the embedded server under `home` (config.EMBEDDED_SERVER_ENV)

    def conninfo(self) -> str:
        """The connection string, starting the embedded server and migrating the schema if needed."""
        conninfo = self.url or start_embedded_server(Path(self.home).resolve())
        migrate_once(conninfo)
        return conninfo

    def revive(self) -> bool:
        """Start the embedded server again if it stopped; whether it had to be. A configured server is left be."""
        if self.url and not self.embedded_server:
            return False
        try:
            return restart_if_stopped(Path(self.home).resolve())
        except Exception:
            return False

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A connection whose transaction commits when the block ends without error."""
        with psycopg.connect(self.conninfo()) as conn:
            yield conn
