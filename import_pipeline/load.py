"""Load: one transaction that COPYs a file's leads into a private staging table, matches them to existing
leads, applies the chosen strategy, stores rejected rows and one history row per source row, and records
the import, so a file is loaded entirely or not at all, and exactly once."""

import datetime
import io
import json
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from import_pipeline.config import LOAD_POOL, LoadConfig
from import_pipeline.dedupe import (
    EVERY_ROW,
    KEY_COLUMNS,
    drop_in_file_duplicates,
    ensure_key_indexes,
    keys_with_email,
    match_existing,
    still_matches,
)
from import_pipeline.resources import LandingFolder, LeadsDatabase, Parts
from import_pipeline.schema import (
    CANONICAL_FIELDS,
    COUNT_KEYS,
    EXTERNAL_SOURCE,
    EXTRA,
    EXTRA_PREFIX,
    KEY_EXPRESSIONS,
    OUTCOME_COUNTS,
    OUTCOMES,
    OWNER,
    PHONE_E164,
    SOURCE_ROW,
)
from import_pipeline.summary import FileSummary, LoadResult
from import_pipeline.validate import NUL_SHOWN_AS

LEADS_ASSET = dg.AssetKey("leads")
# Columns a lead takes from its source row.
LEAD_VALUES = (*CANONICAL_FIELDS, PHONE_E164, EXTRA)
STAGED_COLUMNS = (SOURCE_ROW, *LEAD_VALUES, OWNER)
_STAGED_TYPES = {SOURCE_ROW: "integer", EXTRA: "jsonb"}
COPY_SLICE_ROWS = 100_000
MAX_ATTEMPTS = 5
# The longest the load waits for a row lock (a lead the application holds in an open transaction) or
# for a lead the application is inserting with the same email; then the attempt starts again.
LOCK_TIMEOUT = "5s"
# Imports write leads one at a time (they wait for each other, never for the application, which
# never takes this lock): what one import matched cannot be inserted by another under it.
IMPORTS_LOCK = 7_246_002
# Rounds of insert, match again and apply before an attempt gives up: each round only handles rows
# whose lead the application inserted, deleted or re-keyed since the previous one.
MAX_ROUNDS = 10


class CountsDoNotAddUp(Exception):
    """Rows read differ from the sum of their outcomes: a bug, so nothing is committed."""


class Progress:
    """Logs rows done, rows/s and the time left, at most every `every` seconds."""

    def __init__(self, log, what: str, total: int, every: float = 5.0):
        self.log, self.what, self.total, self.every = log, what, total, every
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.log is None or now - self.last < self.every or done >= self.total:
            return
        self.last = now
        rate = done / (now - self.started)
        self.log.info(f"{self.what}: {done:,} of {self.total:,} rows, {rate:,.0f} rows/s, about {(self.total - done) / rate:,.0f} s left")


class Laps:
    """How long each phase of the load took, logged as it ends: long set-based statements report no rows."""

    def __init__(self, log=None):
        self.log = log
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 2)
        self._last = now
        if self.log is not None:
            self.log.info(f"load: {phase} took {self.seconds[phase]:,.1f} s")


def copy_frames(
    cur: psycopg.Cursor, table: sql.Composable, columns: Sequence[str], frames: Iterable[pl.DataFrame], total: int, log=None
) -> int:
    """COPY frames with these columns into `table` as CSV, slice by slice; returns the rows the server took."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(table, sql.SQL(", ").join(map(sql.Identifier, columns)))
    progress = Progress(log, f"copying into {table.as_string(cur)}", total)
    done = 0
    with cur.copy(statement) as copy:
        for frame in frames:
            for part in frame.select(columns).iter_slices(COPY_SLICE_ROWS):
                buffer = io.BytesIO()
                part.write_csv(buffer, include_header=False)
                copy.write(buffer.getbuffer())
                done += part.height
                progress.update(done)
    return cur.rowcount


def staged_frame(leads: pl.DataFrame, mapping: dict[str, str], assign: str, owner_column: str) -> pl.DataFrame:
    """The columns the staging table takes; unmapped `extra.*` columns become one JSON object per lead."""
    extras = [c for c in leads.columns if c.startswith(EXTRA_PREFIX)]
    extra = (
        pl.struct(
            pl.col(c).str.replace_all("\x00", NUL_SHOWN_AS, literal=True).alias(c.removeprefix(EXTRA_PREFIX))
            for c in extras
        ).struct.json_encode()
        if extras
        else pl.lit(None, pl.String)
    )
    phone = pl.col(PHONE_E164) if PHONE_E164 in leads.columns else pl.lit(None, pl.String)
    owner = pl.col(mapping[owner_column]) if assign == "by_column" and owner_column in mapping else pl.lit(None, pl.String)
    return leads.select(SOURCE_ROW, *CANONICAL_FIELDS, phone.alias(PHONE_E164), extra.alias(EXTRA), owner.alias(OWNER))


def create_work_tables(cur: psycopg.Cursor, staging: sql.Identifier, keys: list[str], source: str = "default") -> None:
    """The staging table for the file's leads, `outcomes` (one row per source row's fate) and `losers`.

    The staging table computes the match keys `keys` with the same expressions as `leads`. Temporary
    tables are private to this connection and vanish with it, even if the run dies.
    """
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_STAGED_TYPES.get(c, "text"))) for c in STAGED_COLUMNS
    ]
    columns.append(sql.SQL("{} text DEFAULT {}").format(sql.Identifier(EXTERNAL_SOURCE), sql.Literal(source)))
    columns += [
        sql.SQL("{} text GENERATED ALWAYS AS ({}) STORED").format(
            sql.Identifier(KEY_COLUMNS[k]), KEY_EXPRESSIONS[KEY_COLUMNS[k]]
        )
        for k in keys
    ]
    cur.execute(
        sql.SQL("CREATE TEMPORARY TABLE {} ({}, match_id bigint) ON COMMIT DROP").format(staging, sql.SQL(", ").join(columns))
    )
    cur.execute(
        """
        CREATE TEMPORARY TABLE outcomes (
            source_row integer PRIMARY KEY, lead_id bigint, action text NOT NULL,
            duplicate_of_row integer, survivor_row integer, changes jsonb
        ) ON COMMIT DROP
        """
    )
    # Rows whose match is looked up again in a round: they lost a race with another session in the one before.
    cur.execute("CREATE TEMPORARY TABLE losers (round integer, source_row integer, PRIMARY KEY (round, source_row)) ON COMMIT DROP")


def earlier_import(cur: psycopg.Cursor, partition_key: str, content_hash: str) -> dict | None:
    """The committed import of this partition or of these bytes, if any."""
    cur.execute(
        "SELECT partition_key, run_id, counts FROM imports WHERE partition_key = %s OR content_hash = %s",
        (partition_key, content_hash),
    )
    row = cur.fetchone()
    return {"partition_key": row[0], "run_id": row[1], "counts": row[2]} if row else None


def _claim_import(cur: psycopg.Cursor, summary: FileSummary, run_id: str) -> int | None:
    """Record the import; None when this partition or these bytes were imported already."""
    cur.execute(
        """
        INSERT INTO imports (partition_key, content_hash, run_id, source_file)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        (summary.partition_key, summary.content_hash, run_id, summary.source_file),
    )
    row = cur.fetchone()
    return row[0] if row else None


def _assign_owners(cur: psycopg.Cursor, staging: sql.Identifier, config: LoadConfig, new_rows: sql.Composable) -> None:
    """Set the owner of the rows about to become leads."""
    if config.assign == "none":
        return  # staged owners are only filled for `by_column`
    if config.assign == "single":
        cur.execute(sql.SQL("UPDATE {} SET owner = %s").format(staging), (config.owners[0],))
    elif config.assign == "by_column":
        fallback = config.owners[0] if config.owners else None
        cur.execute(sql.SQL("UPDATE {} SET owner = COALESCE(owner, %s)").format(staging), (fallback,))
    else:
        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(staging, new_rows))
        count = cur.fetchone()[0]
        # The rotation row is locked until commit, so concurrent imports continue it fairly.
        cur.execute(
            """
            INSERT INTO owner_rotation (owners, next_index) VALUES (%(owners)s, %(count)s)
            ON CONFLICT (owners) DO UPDATE SET next_index = owner_rotation.next_index + %(count)s
            RETURNING next_index - %(count)s
            """,
            {"owners": json.dumps(config.owners), "count": count},
        )
        start = cur.fetchone()[0]
        cur.execute(
            sql.SQL(
                """
                UPDATE {staging} s SET owner = (%(owners)s::text[])[1 + (%(start)s + n.rank - 1) %% %(size)s]
                FROM (SELECT source_row, row_number() OVER (ORDER BY source_row) AS rank FROM {staging} WHERE {new_rows}) n
                WHERE s.source_row = n.source_row
                """
            ).format(staging=staging, new_rows=new_rows),
            {"owners": config.owners, "start": start, "size": len(config.owners)},
        )


UNDECIDED = sql.SQL("NOT EXISTS (SELECT FROM outcomes o WHERE o.source_row = s.source_row)")
LIVE_EMAIL_INDEX = "leads_email_key_live"


def _in_round(round_number: int) -> sql.Composable:
    """The staged rows a round handles: all of them first, then those that lost a race in the round before."""
    if round_number == 0:
        return EVERY_ROW
    return sql.SQL("s.source_row IN (SELECT source_row FROM losers WHERE round = {})").format(sql.Literal(round_number))


class LostRaces(Exception):
    """Rows kept losing their lead to other sessions' writes for `MAX_ROUNDS` rounds: the attempt starts again."""


def _insert_statement(staging: sql.Identifier, where: sql.Composable, action: str, arbitrated: bool) -> sql.Composable:
    columns = sql.SQL(", ").join(map(sql.Identifier, (*LEAD_VALUES, OWNER, EXTERNAL_SOURCE)))
    insert = sql.SQL(
        """
        INSERT INTO leads ({columns}, duplicate_of, created_by_import, updated_by_import, source_file, source_row)
        SELECT {columns}, {duplicate_of}, %(import_id)s, %(import_id)s, %(source_file)s, source_row
        FROM {staging} s WHERE {where}
        ORDER BY email_key, source_row
        """
    ).format(
        columns=columns, duplicate_of=sql.SQL("match_id" if action == "created" else "NULL"), staging=staging, where=where
    )
    if not arbitrated:
        return insert
    return sql.SQL(
        """
        WITH inserted AS (
            {insert}
            ON CONFLICT (email_key) WHERE email_key IS NOT NULL AND deleted_at IS NULL AND duplicate_of IS NULL DO NOTHING
            RETURNING id, source_row
        )
        INSERT INTO outcomes (source_row, lead_id, action) SELECT source_row, id, %(action)s FROM inserted
        """
    ).format(insert=insert)


def _insert(cur: psycopg.Cursor, staging: sql.Identifier, where: sql.Composable, action: str, import_id: int, source_file: str) -> None:
    """Insert the staged rows `where` as new leads; a row whose email a live lead took meanwhile is left out."""
    # The live-email index arbitrates against the application: a lead it inserted since matching
    # wins, and the row is matched again. Key order keeps the email index's pages in order as they fill.
    statement = _insert_statement(staging, sql.SQL("{} AND {}").format(where, UNDECIDED), action, arbitrated=True)
    cur.execute(statement, {"import_id": import_id, "source_file": source_file, "action": action})


def _insert_all_new(cur: psycopg.Cursor, staging: sql.Identifier, import_id: int, source_file: str) -> int | None:
    """Insert every unmatched row at once, without arbitration; None (nothing inserted) when one's email was taken.

    Usually no session took any of them since matching: a plain INSERT, its rows found again by
    `created_by_import`, skips the speculative insertion and the RETURNING of each row (measured: 750k
    leads into 1M, three interleaved runs each on a busy machine: 15.0-19.2 s arbitrated, 10.6-15.1 s plain).
    """
    statement = _insert_statement(staging, sql.SQL("match_id IS NULL"), "inserted", arbitrated=False)
    try:
        with cur.connection.transaction():  # a savepoint: a lost race undoes only this statement
            cur.execute(statement, {"import_id": import_id, "source_file": source_file})
    except psycopg.errors.UniqueViolation as e:
        if e.diag.constraint_name != LIVE_EMAIL_INDEX:
            raise
        return None
    return cur.rowcount


def _change(
    config: LoadConfig, import_id: int, staging: sql.Identifier, keys: list[str], scope: sql.Composable = EVERY_ROW
) -> tuple[sql.Composable, dict]:
    """The `update`/`merge` statement: changed leads only, with each changed field's old and new value."""
    incoming_wins = config.on_existing == "update"
    values = {
        f: sql.SQL("COALESCE(s.{f}, l.{f})" if incoming_wins else "COALESCE(l.{f}, s.{f})").format(f=sql.Identifier(f))
        for f in (*CANONICAL_FIELDS, PHONE_E164)
    }
    # jsonb `||` keeps the right side's value for a key both sides have.
    values[EXTRA] = sql.SQL(
        "CASE WHEN s.extra IS NULL THEN l.extra ELSE "
        + ("COALESCE(l.extra, '{}') || s.extra END" if incoming_wins else "s.extra || COALESCE(l.extra, '{}') END")
    )
    if config.reassign_existing:
        values[OWNER] = sql.SQL("COALESCE(s.owner, l.owner)")
    names = list(values)
    changes = sql.SQL(", ").join(
        sql.SQL("{name}, CASE WHEN o.{f} IS DISTINCT FROM u.{f} THEN jsonb_build_object('old', o.{f}, 'new', u.{f}) END").format(
            name=sql.Literal(f), f=sql.Identifier(f)
        )
        for f in names
    )
    # The match keys are generated columns: they follow the fields. `still_matches` is checked again
    # on the row's newest version when the application changed it since matching.
    return sql.SQL(
        """
        WITH old AS (
            SELECT l.* FROM leads l WHERE l.id IN (SELECT match_id FROM {staging} s WHERE {scope} AND {undecided})
        ), changed AS (
            UPDATE leads l SET {assignments}, updated_by_import = %(import_id)s, updated_at = now()
            FROM {staging} s
            WHERE l.id = s.match_id AND {scope} AND {undecided} AND {still_matches}
              AND ({current}) IS DISTINCT FROM ({incoming})
            RETURNING l.*, s.source_row AS staged_row
        )
        INSERT INTO outcomes (source_row, lead_id, action, changes)
        SELECT u.staged_row, u.id, %(action)s,
               (SELECT jsonb_object_agg(key, value) FROM jsonb_each(jsonb_build_object({changes})) WHERE value <> 'null')
        FROM changed u JOIN old o ON o.id = u.id
        """
    ).format(
        staging=staging,
        scope=scope,
        undecided=UNDECIDED,
        still_matches=still_matches(keys),
        assignments=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(n), values[n]) for n in names),
        current=sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(n)) for n in names),
        incoming=sql.SQL(", ").join(values[n] for n in names),
        changes=changes,
    ), {"import_id": import_id, "action": "updated" if incoming_wins else "merged"}


def _match_losers_again(
    cur: psycopg.Cursor, staging: sql.Identifier, keys: list[str], keep: str, scope: sql.Composable, import_id: int
) -> None:
    """Match the rows that lost a race to the lead that won it; a lead another row already has makes them its duplicates."""
    cur.execute(sql.SQL("UPDATE {} s SET match_id = NULL WHERE {}").format(staging, scope))
    match_existing(cur, staging, keys, keep, scope=scope)
    cur.execute(
        sql.SQL(
            """
            WITH wanted AS (
                SELECT match_id FROM {staging} s WHERE {scope} AND match_id IS NOT NULL
            ), taken AS (
                SELECT lead_id, min(source_row) AS by_row FROM (
                    SELECT o.lead_id, o.source_row FROM outcomes o
                    WHERE o.action <> 'duplicate_in_file' AND o.lead_id IN (SELECT match_id FROM wanted)
                    UNION ALL
                    SELECT l.id, l.source_row FROM leads l
                    WHERE l.id IN (SELECT match_id FROM wanted) AND l.created_by_import = %(import_id)s
                    UNION ALL
                    SELECT s.match_id, s.source_row FROM {staging} s
                    WHERE s.match_id IN (SELECT match_id FROM wanted) AND NOT ({scope})
                ) claims GROUP BY lead_id
            ), moved AS (
                INSERT INTO outcomes (source_row, lead_id, action, duplicate_of_row, survivor_row)
                SELECT s.source_row, s.match_id, 'duplicate_in_file', t.by_row, t.by_row
                FROM {staging} s JOIN taken t ON t.lead_id = s.match_id WHERE {scope}
                RETURNING source_row
            )
            DELETE FROM {staging} WHERE source_row IN (SELECT source_row FROM moved)
            """
        ).format(staging=staging, scope=scope),
        {"import_id": import_id},
    )


def _apply(
    cur: psycopg.Cursor, staging: sql.Identifier, config: LoadConfig, import_id: int, source_file: str,
    keys: list[str], keep: str, lap: "Laps", log=None,
) -> int:
    """Give every staged row its outcome: a new lead, a change to the lead it matches, or a duplicate of it.

    No lock but the rows written: the application may insert, change or delete leads meanwhile. A row
    whose email it took, or whose matched lead it deleted or re-keyed, is matched again in the next
    round. Returns the leads inserted without an `outcomes` row (see `_insert_all_new`).
    """
    unmatched, matched = sql.SQL("match_id IS NULL"), sql.SQL("match_id IS NOT NULL")
    _assign_owners(cur, staging, config, sql.SQL("TRUE") if config.on_existing == "create" else unmatched)
    all_keys = keys_with_email(keys)
    inserted_plainly = 0
    for round_number in range(MAX_ROUNDS):
        scope = _in_round(round_number)
        if round_number:
            _match_losers_again(cur, staging, all_keys, keep, scope, import_id)
        plain = _insert_all_new(cur, staging, import_id, source_file) if round_number == 0 else None
        if plain is None:
            _insert(cur, staging, sql.SQL("{} AND {}").format(unmatched, scope), "inserted", import_id, source_file)
        else:
            inserted_plainly = plain
        if config.on_existing == "create":
            _insert(cur, staging, sql.SQL("{} AND {}").format(matched, scope), "created", import_id, source_file)
        if round_number == 0:
            # Temporary tables are never analyzed automatically; the joins below need their sizes.
            cur.execute("ANALYZE outcomes")
            lap("insert new leads")
        next_round = {"next": round_number + 1}
        if plain is None:
            cur.execute(
                sql.SQL("INSERT INTO losers SELECT %(next)s, source_row FROM {} s WHERE {} AND match_id IS NULL AND {}").format(
                    staging, scope, UNDECIDED
                ),
                next_round,
            )
        if config.on_existing in ("update", "merge"):
            statement, params = _change(config, import_id, staging, all_keys, scope)
            cur.execute(statement, params)
            if round_number == 0:
                lap(f"{config.on_existing} matched leads")
        # Matched rows that changed nothing (or strategy `skip`) are duplicates of the lead they match.
        # Under `skip` nothing is written, so a lead the application deletes meanwhile is no race: the
        # same as its deleting the lead just after the import (re-checking each cost 3 s at 1M rows).
        # Under `update`/`merge` a row the UPDATE passed over may have lost its lead: checked again.
        recheck = config.on_existing in ("update", "merge")
        cur.execute(
            sql.SQL(
                """
                INSERT INTO outcomes (source_row, lead_id, action)
                SELECT s.source_row, s.match_id, 'skipped' FROM {staging} s {join}
                WHERE {scope} AND match_id IS NOT NULL AND {undecided} AND {still_matches}
                """
            ).format(
                staging=staging, scope=scope, undecided=UNDECIDED,
                join=sql.SQL("JOIN leads l ON l.id = s.match_id" if recheck else ""),
                still_matches=still_matches(all_keys) if recheck else sql.SQL("TRUE"),
            )
        )
        if recheck:
            # Left: rows whose lead was deleted or re-keyed since matching.
            cur.execute(
                sql.SQL(
                    "INSERT INTO losers SELECT %(next)s, source_row FROM {} s WHERE {} AND match_id IS NOT NULL AND {}"
                    " ON CONFLICT DO NOTHING"
                ).format(staging, scope, UNDECIDED),
                next_round,
            )
        cur.execute("SELECT count(*) FROM losers WHERE round = %(next)s", next_round)
        lost = cur.fetchone()[0]
        lap("skipped rows" if round_number == 0 else f"round {round_number + 1}")
        if not lost:
            return inserted_plainly
        if log is not None:
            log.info(f"load: {lost:,} rows lost their lead to another session's write; matching them again")
    raise LostRaces(f"rows still lost their lead to other sessions' writes after {MAX_ROUNDS} rounds")


def _wait_for_other_imports(cur: psycopg.Cursor, log=None) -> None:
    """Hold the imports' lock until commit; only another import's load is waited for, however long."""
    cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (IMPORTS_LOCK,))
    if cur.fetchone()[0]:
        return
    if log is not None:
        log.info("load: waiting for another import to finish writing leads")
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (IMPORTS_LOCK,))


def check_conservation(counts: dict) -> None:
    """Every row read is inserted, updated, merged, created, a duplicate or rejected; anything else is a bug."""
    outcomes = ("rows_rejected", *OUTCOME_COUNTS.values())
    total = sum(counts.get(k, 0) for k in outcomes)
    if total != counts["rows_read"]:
        detail = ", ".join(f"{k}={counts.get(k, 0)}" for k in outcomes)
        raise CountsDoNotAddUp(f"rows_read={counts['rows_read']} but {detail} add up to {total}")


def load_import(
    conn: psycopg.Connection,
    leads: Parts,
    rejected: Parts,
    summary: FileSummary,
    config: LoadConfig,
    run_id: str,
    log=None,
    laps: Laps | None = None,
) -> dict:
    """Load one file in one transaction; returns its counts.

    Loading a partition that is already committed changes nothing and returns the committed counts,
    with `already_imported_as` naming the partition that holds these bytes.
    """
    lap = laps or Laps()
    keys, keep = summary.match_keys, summary.keep
    with conn.transaction(), conn.cursor() as cur:
        import_id = _claim_import(cur, summary, run_id)
        if import_id is None:
            earlier = earlier_import(cur, summary.partition_key, summary.content_hash)
            return earlier["counts"] | {"already_imported_as": earlier["partition_key"], "first_run_id": earlier["run_id"]}
        # Before the first temporary table: staging and outcomes stay in memory instead of spilling.
        cur.execute("SET LOCAL temp_buffers = '512MB'")
        cur.execute("SET LOCAL work_mem = '256MB'")

        staging = sql.Identifier(f"staging_{run_id}")
        create_work_tables(cur, staging, keys_with_email(keys), summary.source)
        staged = (staged_frame(chunk, summary.mapping, config.assign, config.owner_column) for chunk in leads.frames())
        copy_frames(cur, staging, STAGED_COLUMNS, staged, leads.rows, log)
        # Temporary tables are never analyzed automatically; without statistics the matching plan is quadratic.
        cur.execute(sql.SQL("ANALYZE {}").format(staging))
        lap("copy to staging")
        drop_in_file_duplicates(cur, staging, keys, keep)
        lap("drop in-file duplicates")
        _wait_for_other_imports(cur, log)
        lap("wait for other imports")
        # Every lock the load waits for on `leads` is bounded: an application transaction holding a
        # lead (or inserting its email) for longer makes this attempt start again instead of waiting on.
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        match_existing(cur, staging, keys, keep)
        lap("match existing")
        inserted_plainly = _apply(cur, staging, config, import_id, summary.source_file, keys, keep, lap, log)
        # The tables below are the pipeline's own: no application session waits behind the load there.
        cur.execute("SET LOCAL lock_timeout = 0")
        # In-file duplicates point at the lead their surviving row became.
        cur.execute(
            """
            UPDATE outcomes d SET lead_id = k.lead_id FROM outcomes k
            WHERE d.action = 'duplicate_in_file' AND d.lead_id IS NULL AND k.source_row = d.survivor_row
            """
        )
        cur.execute(
            """
            UPDATE outcomes d SET lead_id = l.id FROM leads l
            WHERE d.action = 'duplicate_in_file' AND d.lead_id IS NULL
              AND l.created_by_import = %s AND l.source_row = d.survivor_row
            """,
            (import_id,),
        )
        # An inserted lead records its import and line itself (`created_by_import`, `source_row`; the
        # view `import_outcomes` shows every row): a history row for it cost 5 s per million rows.
        cur.execute(
            """
            INSERT INTO lead_history (import_id, source_row, lead_id, action, duplicate_of_row, changes)
            SELECT %s, source_row, lead_id, action, duplicate_of_row, changes FROM outcomes WHERE action <> 'inserted'
            """,
            (import_id,),
        )
        lap("write history")
        cur.execute("SELECT action, count(*) FROM outcomes GROUP BY action")
        by_action = dict.fromkeys(OUTCOMES, 0) | dict(cur.fetchall())
        by_action["inserted"] += inserted_plainly
        stored_rejects = copy_frames(
            cur,
            sql.Identifier("rejected_rows"),
            ("import_id", SOURCE_ROW, "raw_values", "reasons"),
            (chunk.with_columns(import_id=pl.lit(import_id)) for chunk in rejected.frames()),
            rejected.rows,
        )
        counts = {"rows_read": summary.rows_read, "rows_valid": summary.rows_valid, "rows_rejected": stored_rejects}
        counts |= {OUTCOME_COUNTS[action]: by_action[action] for action in OUTCOMES}
        check_conservation(counts)
        cur.execute("UPDATE imports SET counts = %s WHERE id = %s", (json.dumps(counts), import_id))
        lap("rejected rows")
    lap("commit")
    return counts


RACES = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure, psycopg.errors.LockNotAvailable, LostRaces)


def load_with_retries(
    context: dg.OpExecutionContext, leads_db: LeadsDatabase, leads: Parts, rejected: Parts, summary: FileSummary,
    config: LoadConfig, laps: Laps,
) -> dict:
    """`load_import`, retried from scratch when it loses a race (a deadlock, a lock held too long, lost rows)."""
    with leads_db.connect() as conn:
        conn.autocommit = True
        for index in ensure_key_indexes(conn, summary.match_keys):
            context.log.info(f"load: built the index {index} for this import's match keys")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with leads_db.connect() as conn:
            try:
                return load_import(conn, leads, rejected, summary, config, context.run_id, log=context.log, laps=laps)
            except RACES as e:
                if attempt == MAX_ATTEMPTS:
                    raise
                delay = min(8.0, 0.2 * 2**attempt) * (0.5 + random.random())
                context.log.warning(f"load attempt {attempt} lost a race with another session ({e}); retrying in {delay:.1f}s")
                time.sleep(delay)
    raise AssertionError("unreachable")


TRANSIENT_ERRORS = (psycopg.OperationalError, *RACES)


# Connection losses and server restarts are retried; the load is one idempotent transaction, so a retry
# after an unseen commit finds the import recorded and changes nothing.
@dg.op(
    retry_policy=dg.RetryPolicy(max_retries=4, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
    pool=LOAD_POOL,
)
def load(
    context: dg.OpExecutionContext,
    config: LoadConfig,
    leads_db: LeadsDatabase,
    leads: Parts,
    rejected: Parts,
    summary: FileSummary,
) -> LoadResult:
    """Commit the file's leads, history and rejected rows, and record the import in the `leads` asset."""
    started = time.perf_counter()
    if config.assign in ("single", "round_robin") and not config.owners:
        raise dg.Failure(description=f"assign: {config.assign} needs `owners` in the load config")
    laps = Laps(context.log)
    try:
        counts = load_with_retries(context, leads_db, leads, rejected, summary, config, laps)
    except CountsDoNotAddUp as e:
        raise dg.Failure(
            description=f"{summary.source_file}: counts do not add up, nothing was loaded: {e}", allow_retries=False
        ) from e
    except TRANSIENT_ERRORS:
        raise
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as e:
        # Dagster would retry an interrupted step under its retry policy; a terminated run must stop.
        raise dg.Failure(
            description=f"{summary.source_file}: the run was terminated during the load; nothing was committed",
            allow_retries=False,
        ) from e
    except psycopg.Error as e:
        # Bad data or a violated constraint will fail the same way every time: say so at once.
        raise dg.Failure(
            description=f"{summary.source_file}: the database refused the load ({type(e).__name__}): {e}",
            allow_retries=False,
        ) from e
    summary = summary.after("load", started)
    committed = {k: counts[k] for k in COUNT_KEYS if k in counts}
    if "already_imported_as" in counts and counts["already_imported_as"] != summary.partition_key:
        context.log.info(f"{summary.source_file}: the same bytes were imported as {counts['already_imported_as']}; skipped")
        context.add_output_metadata({"skipped": True, "already_imported_as": counts["already_imported_as"]})
        return LoadResult(summary, "skipped", committed)

    duration = sum(summary.seconds.values())
    metadata = {
        **{k: counts.get(k, 0) for k in COUNT_KEYS},
        "on_existing": config.on_existing,
        "match_keys": ", ".join(summary.match_keys),
        "duration_s": round(duration, 3),
        "rows_per_s": round(counts["rows_read"] / duration) if duration else 0,
        "source_file": dg.MetadataValue.path(summary.source_file),
        "content_hash": summary.content_hash,
        "step_seconds": dg.MetadataValue.json({step: round(s, 2) for step, s in summary.seconds.items()}),
        "load_seconds": dg.MetadataValue.json(laps.seconds),
    }
    context.log_event(dg.AssetMaterialization(asset_key=LEADS_ASSET, partition=context.partition_key, metadata=metadata))
    context.add_output_metadata(metadata)
    return LoadResult(summary, "success", committed)

@dg.op
def archive_file(context: dg.OpExecutionContext, landing: LandingFolder, result: LoadResult) -> str | None:
    """Move a successfully imported landed file to `processed/YYYY/MM/DD/`; it is never deleted. Returns where to."""
    moved = landing.archive(Path(result.source_file), datetime.date.today())
    if moved:
        context.add_output_metadata({"archived_to": dg.MetadataValue.path(str(moved))})
    return str(moved) if moved else None
