"""The application writing to `leads` during an import: one single-row write every 0.2 s, each one timed.

    with probing(url, untouched_leads(url, workload)) as report:
        ...  # the import runs here
    report["app_write_wait_max_s"]

The writes cycle through (a) an UPDATE of an existing lead the import does not touch, (b) an INSERT of a
lead with just its own fields and (c) a DELETE of that lead, from one autocommit session of their own.
No lock_timeout: the raw wait is what is measured.
"""

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psycopg

INTERVAL_S = 0.2
KINDS = ("update", "insert", "delete")
PROBE_EMAILS = "probe-%@probe.example.com"  # the LIKE pattern of the emails (b) inserts; no generated email matches
APPLICATION_NAME = "bench-app-writes"  # so the probe's session is easy to spot in pg_stat_activity
FIRST_MESSAGES = 5


def untouched_leads(url: str, workload: Path, count: int = 300, email_column: str = "Email") -> list[int]:
    """Ids of `count` random existing leads whose email is not in the workload, so the import leaves them alone."""
    emails = pl.read_csv(workload, columns=[email_column], infer_schema=False)[email_column]
    keys = emails.drop_nulls().str.strip_chars().str.to_lowercase()
    with psycopg.connect(url) as conn:
        # Twenty times as many as needed: at 10M rows into 1M leads, 2M overlapping rows name most existing leads.
        rows = conn.execute(
            "SELECT id, lower(btrim(email)) FROM leads WHERE email IS NOT NULL ORDER BY random() LIMIT %s",
            (20 * count,),
        ).fetchall()
    candidates = pl.DataFrame(rows, schema={"id": pl.Int64, "key": pl.String}, orient="row")
    ids = candidates.filter(~pl.col("key").is_in(keys.implode()))["id"].head(count).to_list()
    if not ids:
        raise RuntimeError(f"no existing lead outside {workload.name} to update")
    return ids


def remove_probe_leads(url: str) -> int:
    """Delete the leads the probe inserted and did not delete itself; return how many there were."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("DELETE FROM leads WHERE email LIKE %s", (PROBE_EMAILS,)).rowcount


def _p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    return sorted(values)[math.ceil(0.99 * len(values)) - 1]


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def app_writes(url: str, lead_ids: list[int], stop: threading.Event, interval_s: float = INTERVAL_S) -> dict:
    """Write to `leads` every `interval_s` until `stop` is set, reconnecting when the session drops; report the waits."""
    waits: dict[str, list[float]] = {kind: [] for kind in KINDS}
    errors, drops = [], []
    error_count = drop_count = deletes_of_nothing = 0
    slowest = {"kind": None, "at_s": None, "wait_s": 0.0}
    disconnected_s, dropped_at = 0.0, None
    started = time.perf_counter()
    conn: psycopg.Connection | None = None
    probe_lead = None  # the lead (b) inserted, for (c) to delete
    n = 0
    while not stop.is_set():
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(url, autocommit=True, application_name=APPLICATION_NAME)
            except psycopg.OperationalError:
                stop.wait(interval_s)  # the server may be restarting: keep trying, as an application would
                continue
            if dropped_at is not None:
                disconnected_s, dropped_at = disconnected_s + time.perf_counter() - dropped_at, None
        kind = KINDS[n % len(KINDS)]
        tick = time.perf_counter()
        try:
            if kind == "update":
                conn.execute(
                    "UPDATE leads SET notes = %s WHERE id = %s",
                    (f"application write {n}", lead_ids[n // 3 % len(lead_ids)]),
                )
            elif kind == "insert":
                probe_lead = conn.execute(
                    "INSERT INTO leads (company_name, email) VALUES (%s, %s) RETURNING id",
                    ("Probe Inc", f"probe-{n}@probe.example.com"),
                ).fetchone()[0]
            else:
                # Without a lead from (b) it deletes nothing, but it still waits for the same table lock.
                target, probe_lead = probe_lead, None
                deletes_of_nothing += target is None
                conn.execute("DELETE FROM leads WHERE id = %s", (target or 0,))
        except psycopg.Error as e:
            # A failed statement waited too (a refused INSERT takes its table lock before the NOT NULL check).
            if conn.closed:
                drop_count, dropped_at = drop_count + 1, time.perf_counter()
                if len(drops) < FIRST_MESSAGES:
                    drops.append(f"{kind} at {tick - started:.1f} s: {_first_line(e)}")
            else:
                error_count += 1
                message = f"{kind}: {_first_line(e)}"
                if len(errors) < FIRST_MESSAGES and message not in errors:
                    errors.append(message)
        wait = time.perf_counter() - tick
        waits[kind].append(wait)
        if wait > slowest["wait_s"]:
            slowest = {"kind": kind, "at_s": round(tick - started, 2), "wait_s": round(wait, 3)}
        n += 1
        stop.wait(max(0.0, interval_s - wait))
    if conn is not None:
        conn.close()
    if dropped_at is not None:
        disconnected_s += time.perf_counter() - dropped_at
    every = [w for kind in KINDS for w in waits[kind]]
    return {
        "app_writes": len(every),
        "app_write_wait_max_s": round(max(every, default=0.0), 3),
        "app_write_wait_by_kind": {
            kind: {"count": len(w), "max_s": round(max(w), 3), "p99_s": round(_p99(w), 3)}
            for kind, w in waits.items()
            if w
        },
        "app_write_slowest": slowest,  # at_s: seconds after the probe started, shortly before the import
        "app_write_errors": {"count": error_count, "first": errors},
        "app_deletes_of_nothing": deletes_of_nothing,
        "sessions_dropped": drop_count,
        "session_drops": drops,
        "app_disconnected_s": round(disconnected_s, 2),
    }


@contextlib.contextmanager
def probing(url: str, lead_ids: list[int]) -> Iterator[dict]:
    """Run `app_writes` in a thread for the duration of the block; the yielded dict holds its report afterwards."""
    remove_probe_leads(url)  # an interrupted earlier run may have left some, and their emails would collide
    report: dict = {}
    failure: list[BaseException] = []
    stop = threading.Event()

    def probe() -> None:
        try:
            report.update(app_writes(url, lead_ids, stop))
        except BaseException as e:  # re-raised in the caller's thread, where the bench can fail on it
            failure.append(e)

    thread = threading.Thread(target=probe, name=APPLICATION_NAME, daemon=True)
    thread.start()
    try:
        yield report
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]
    report["probe_leads_left"] = remove_probe_leads(url)
