"""Load: one file in one transaction, so it is loaded entirely or not at all, and exactly once.

Its leads are staged (`staging`), matched within the file and to live leads (`dedupe`), given their
outcomes (`strategies`); rejected rows and the outcomes that are not new leads are stored, and the
import is recorded with its counts (`ledger`)."""

import dataclasses
import itertools
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql
from pydantic import Field, model_validator

from import_pipeline.concurrent_scoring import ConcurrentScoring
from import_pipeline.config import LOAD_POOL
from import_pipeline.database import LeadsDatabase, wait_for_other_imports
from import_pipeline.dedupe import (
    drop_in_file_duplicates,
    ensure_key_indexes,
    keys_with_email,
    match_existing,
    move_losers,
)
from import_pipeline.lead_comparison import record_written
from import_pipeline.ledger import CountsDoNotAddUp, check_conservation, claim_import, earlier_import, record_xids
from import_pipeline.parts import Parts
from import_pipeline.plan import PlanReport, changes_markdown, latest_plan, plan_difference
from import_pipeline.possible_duplicates import (
    DUPLICATE_COUNTS,
    ensure_scoring,
    match_flagged,
    record_possible_duplicates,
)
from import_pipeline.progress import Laps
from import_pipeline.report import sample_table
from import_pipeline.schema import COUNT_KEYS, ORIGIN_IMPORT, ORIGIN_ROW, OUTCOME_COUNTS, OUTCOMES, SOURCE_ROW
from import_pipeline.scoring import file_rows, write_scored
from import_pipeline.staging import STAGED_COLUMNS, copy_frames, create_work_tables, read_frame, staged_frame
from import_pipeline.state import StateFolder
from import_pipeline.strategies import LostRaces, apply_strategy
from import_pipeline.summary import FileSummary, LoadResult

T = TypeVar("T")
LEADS_ASSET = dg.AssetKey("leads")
OUTCOME_TAG_PREFIX = "import_pipeline/"  # run tags of the outcome counts, e.g. import_pipeline/inserted
REPLACES_RUN_TAG = "import_pipeline/replaces_run"  # an import of a partition again after its revert
AWAITING_TAG = "import_pipeline/awaiting_approval"  # a plan waiting for approve_import_job or decline_import_job
APPROVED_PLAN_TAG = "import_pipeline/approved_plan_run"  # the plan an approved import committed
APPROVE_JOB = "approve_import_job"  # commits an import that awaits approval (jobs.py)
# The longest the load waits for a row lock (a lead the application holds in an open transaction) or
# for a lead the application is inserting with the same email; then the attempt starts again.
LOCK_TIMEOUT = "5s"
# The lap of the possible-duplicate scoring on its own connection (`concurrent_scoring`), beside the others.
SCORED_BESIDE = "score possible duplicates beside the load"


class LoadConfig(dg.Config):
    """What happens to rows that match an existing lead, and who owns new leads."""

    on_existing: Literal["skip", "update", "merge", "create"] = Field(
        default="skip",
        description="skip: leave the lead; update: non-empty incoming values overwrite; merge: incoming values "
        "fill empty fields only; create: insert anyway, flagged as a possible duplicate.",
    )
    assign: Literal["none", "single", "round_robin", "by_column"] = Field(
        default="none", description="Owner of new leads."
    )
    owners: list[str] = Field(
        default=[], description="single: [owner]; round_robin: the rotation; by_column: [fallback owner]."
    )
    owner_column: str = Field(default="", description="by_column: the source header that holds the owner.")
    reassign_existing: bool = Field(
        default=False, description="update/merge also set the owner of the existing leads they change."
    )
    plan: bool = Field(
        default=False,
        description="Only show what the load would do: the same load against the table as it is, rolled back; "
        "the counts and every field it would change (plan report), nothing committed.",
    )
    review: bool = Field(
        default=False,
        description="Require approval: plan, and commit only when approve_import_job runs for the partition "
        "(a mapping profile with `review = true` requires it for its files).",
    )

    @model_validator(mode="after")
    def _owners_for_assign(self) -> "LoadConfig":
        if self.assign in ("single", "round_robin") and not self.owners:
            raise ValueError(f"assign: {self.assign} needs `owners` (a list of owner names)")
        if self.assign == "single" and len(self.owners) != 1:
            raise ValueError(f"assign: single needs exactly one owner in `owners`, not {self.owners}")
        if self.assign == "by_column" and not self.owner_column:
            raise ValueError("assign: by_column needs `owner_column`, the source header that holds the owner")
        return self


def _write_scored(cur: psycopg.Cursor, scoring: ConcurrentScoring, laps: Laps) -> None:
    """Wait for the scoring beside the load; what it found goes to the temporary table `scored`."""
    scored = scoring.scored()
    laps.beside(SCORED_BESIDE, scored.seconds)
    write_scored(cur, scored.found)


def _link_resubmitted_rows(cur: psycopg.Cursor, summary: FileSummary, import_id: int) -> None:
    """Record where each row of a corrected reject report was rejected (`resubmitted_rows`)."""
    if not summary.origins:
        return
    origins = (
        pl.read_parquet(path).select(
            pl.lit(import_id).alias("import_id"),
            SOURCE_ROW,
            pl.col(ORIGIN_IMPORT).alias("rejected_in"),
            pl.col(ORIGIN_ROW).alias("rejected_row"),
        )
        for path in summary.origins
    )
    columns = ("import_id", SOURCE_ROW, "rejected_in", "rejected_row")
    copy_frames(cur, sql.Identifier("resubmitted_rows"), columns, origins, 0)
    cur.execute(
        """
        UPDATE resubmitted_rows r SET rejected_in_import = (
            -- A partition imported again after a revert: its newest import (the rows were rejected in each).
            SELECT max(i.id) FROM imports i WHERE i.partition_key = r.rejected_in
        )
        WHERE r.import_id = %s
        """,
        (import_id,),
    )


def load_import(
    conn: psycopg.Connection,
    leads: Parts,
    rejected: Parts,
    summary: FileSummary,
    config: LoadConfig,
    run_id: str,
    log=None,
    laps: Laps | None = None,
    plan: PlanReport | None = None,
    scoring: ConcurrentScoring | None = None,
) -> dict:
    """Load one file in one transaction; returns its counts.

    Loading a partition that is already committed changes nothing and returns the committed counts,
    with `already_imported_as` naming the partition that holds these bytes. With `plan`, the very same
    load is rolled back at the end, after `plan` has written what it would change. With `scoring` (started),
    the rows no key matched are scored as possible duplicates beside the writes, then queued.
    """
    lap = laps or Laps()
    keys, keep = summary.match_keys, summary.keep
    with conn.transaction(force_rollback=plan is not None), conn.cursor() as cur:
        claimed = claim_import(cur, summary, run_id)
        if claimed is None:
            earlier = earlier_import(cur, summary.partition_key, summary.content_hash, summary.sheet)
            assert earlier is not None, "the claim conflicted with an import that is not there"
            return earlier["counts"] | {
                "already_imported_as": earlier["partition_key"],
                "first_run_id": earlier["run_id"],
            }
        import_id, replaces_run = claimed
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
        if scoring is not None:
            refreshed = scoring.compared()
            if refreshed and log is not None:
                log.info(
                    f"load: {refreshed:,} leads new or changed since the last scoring import, compared as they are now"
                )
            lap("compare leads as they are now")
        wait_for_other_imports(cur, log)
        lap("wait for other imports")
        # Every lock the load waits for on `leads` is bounded: an application transaction holding a
        # lead (or inserting its email) for longer makes this attempt start again instead of waiting on.
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        match_existing(cur, staging, keys, keep)
        lap("match existing")
        auto_merged = scoring is not None and scoring.scoring.auto_merge
        compared: pl.DataFrame | None = None
        if scoring is not None:
            query = sql.SQL("SELECT source_row FROM {} WHERE match_id IS NULL").format(staging)
            compared = scoring.score_unmatched(read_frame(cur, query, {"source_row": pl.Int64}).to_series())
            if auto_merged:
                # The merges are writes of this load: their candidates are needed first.
                _write_scored(cur, scoring, lap)
                if match_flagged(cur, staging):
                    # Two rows merged into one candidate: the first (`keep`) is merged, the other repeats it.
                    move_losers(cur, staging, sql.Identifier("match_id"), keep, lead=sql.SQL("s.match_id"))
            lap("score possible duplicates")
        inserted_plainly, savepoint_xid = apply_strategy(
            cur, staging, config, import_id, summary.source_file, keys, keep, lap, log, auto_merged
        )
        record_xids(cur, import_id, savepoint_xid)
        if compared is not None:
            # The leads this import wrote, compared as they are now by the next scoring import.
            record_written(cur, import_id, compared)
            lap("compare the leads written")
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
        _link_resubmitted_rows(cur, summary, import_id)
        counts = {"rows_read": summary.rows_read, "rows_valid": summary.rows_valid, "rows_rejected": stored_rejects}
        counts |= {OUTCOME_COUNTS[action]: by_action[action] for action in OUTCOMES}
        check_conservation(counts)
        lap("rejected rows")
        if scoring is not None:
            if not auto_merged:
                _write_scored(cur, scoring, lap)
                lap("score possible duplicates: what the writes did not cover")
            counts |= record_possible_duplicates(cur, staging, import_id)
            lap("queue possible duplicates")
        cur.execute("UPDATE imports SET counts = %s WHERE id = %s", (json.dumps(counts), import_id))
        if plan is not None:
            plan.write(cur)
            lap("plan report")
    lap("roll back" if plan is not None else "commit")
    return counts | ({"replaces_run_id": replaces_run} if replaces_run else {})


RACES = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
    LostRaces,
)


class RetriesExhausted(Exception):
    """Transient errors went on for longer than the retry budget; the last one is the cause."""


TRANSIENT_ERRORS = (psycopg.OperationalError, *RACES)


def _pause(attempt: int) -> float:
    # 0.4 s, 0.8 s ... up to 8 s, each between half and one and a half times that: sessions that collided
    # do not collide again in step.
    return min(8.0, 0.2 * 2**attempt) * (0.5 + random.random())


def load_with_retries(
    context: dg.OpExecutionContext,
    leads_db: LeadsDatabase,
    leads: Parts,
    rejected: Parts,
    summary: FileSummary,
    config: LoadConfig,
    laps: Laps,
    plan: PlanReport | None = None,
    warnings: list[str] | None = None,
) -> dict:
    """`load_import`, started again from scratch after a transient error (the server gone or restarting, a
    deadlock, a lock held too long, lost rows) until `leads_db.retry_seconds` have passed.

    The load is one transaction, and an import is recorded once: an attempt after a commit that was not
    seen finds the import recorded and changes nothing.
    """
    indexed = False
    scoring = summary.scoring
    warnings = [] if warnings is None else warnings

    def attempt() -> dict:
        nonlocal indexed, scoring
        if not indexed:
            with leads_db.connect() as conn:
                conn.autocommit = True
                for index in ensure_key_indexes(conn, summary.match_keys):
                    context.log.info(f"load: built the index {index} for this import's match keys")
                if scoring is not None:
                    off = ensure_scoring(conn)
                    if off is not None:
                        context.log.warning(f"load: {off}")
                        warnings.append(off)
                        scoring = None
            indexed = True
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="possible-duplicates")
        concurrent = None
        try:
            with leads_db.connect() as conn:
                if scoring is not None:
                    concurrent = ConcurrentScoring(scoring, leads_db, worker)
                    concurrent.start(file_rows(part) for part in leads.scans())
                return load_import(
                    conn,
                    leads,
                    rejected,
                    summary,
                    config,
                    context.run_id,
                    log=context.log,
                    laps=laps,
                    plan=plan,
                    scoring=concurrent,
                )
        finally:
            # After the load's connection (a failed attempt rolls back first); a task not started yet is dropped and
            # the one judging stops at its next page (a file imported before returns before its scoring is needed).
            if concurrent is not None:
                concurrent.stop()
            worker.shutdown(wait=True, cancel_futures=True)

    return with_retries(context, leads_db, "load", attempt)


def with_retries(context: dg.OpExecutionContext, leads_db: LeadsDatabase, what: str, attempt: Callable[[], T]) -> T:
    """`attempt()` (one transaction), started again after a transient error until `leads_db.retry_seconds` passed."""
    deadline = time.monotonic() + leads_db.retry_seconds
    for number in itertools.count(1):
        try:
            return attempt()
        except TRANSIENT_ERRORS as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RetriesExhausted(f"{type(e).__name__}: {' '.join(str(e).split())}") from e
            pause = min(_pause(number), left)
            # Under the embedded default the server may have stopped: start it again before anything else
            # (Dagster's own event log lives there too).
            revived = leads_db.revive()
            context.log.warning(
                f"{what} attempt {number} failed ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
                f"{'; the embedded server was started again' if revived else ''}; "
                f"trying again in {pause:.1f} s ({left:.0f} s of the retry budget left)"
            )
            time.sleep(pause)
    raise AssertionError("unreachable")


def leads_table_columns(leads_db: LeadsDatabase) -> list[list]:
    """The `leads` table's columns as the database has them now (the application may add its own)."""
    with leads_db.connect() as conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'leads' ORDER BY ordinal_position
            """
        )
        return [list(row) for row in cur.fetchall()]


def import_record(
    summary: FileSummary, counts: dict, config: "LoadConfig", load_seconds: dict, columns: list[list]
) -> dict[str, Any]:
    """What the import did, as JSON-ready values: the `leads` partition's materialization (`as_metadata`)."""
    duration = sum(summary.seconds.values())
    record: dict[str, Any] = {
        **{k: counts.get(k, 0) for k in COUNT_KEYS},
        "dagster/row_count": sum(counts.get(k, 0) for k in ("inserted", "updated", "merged", "created")),
    }
    if summary.scoring is not None:
        # Beside the outcomes, not among them: a flagged or queued row is still inserted (or merged).
        record |= {k: counts.get(k, 0) for k in DUPLICATE_COUNTS}
    if summary.rejected_sample:
        # Next to the counts: what a user opening the import looks for first.
        record["rejected_rows"] = list(summary.rejected_sample)
        record["reject_report"] = summary.reject_report
    record |= {
        "on_existing": config.on_existing,
        "match_keys": ", ".join(summary.match_keys),
        "duration_s": round(duration, 3),
        "rows_per_s": round(counts["rows_read"] / duration) if duration else 0,
        "source_file": summary.source_file,
        "content_hash": summary.content_hash,
        "step_seconds": {step: round(s, 2) for step, s in summary.seconds.items()},
        "load_seconds": load_seconds,
        "dagster/column_schema": columns,
    }
    if summary.origins:
        # A corrected reject report: how many of its rows came from each earlier import (`resubmitted_rows`).
        by_import = pl.scan_parquet(list(summary.origins)).group_by(ORIGIN_IMPORT).len().sort(ORIGIN_IMPORT).collect()
        record["resubmitted_from"] = {str(k): n for k, n in by_import.iter_rows()}
    if summary.warnings:
        record["warnings"] = list(summary.warnings)
    return record


_PATHS = ("source_file", "landed_as", "archived_to", "reject_report", "plan_report")


def as_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """`import_record` as Dagster metadata: paths as paths, the columns as a table schema, samples as tables."""
    metadata: dict[str, Any] = {}
    for key, value in record.items():
        if key == "dagster/column_schema":
            metadata[key] = dg.TableSchema(
                columns=[
                    dg.TableColumn(name, kind, constraints=dg.TableColumnConstraints(nullable=nullable))
                    for name, kind, nullable in value
                ]
            )
        elif key == "rejected_rows":
            metadata[key] = sample_table(tuple(value))
        elif key == "changes":
            metadata[key] = changes_markdown(value, record.get("planned_changes", len(value)))
        elif key in _PATHS and isinstance(value, str):
            metadata[key] = dg.MetadataValue.path(value)
        elif isinstance(value, dict | list):
            metadata[key] = dg.MetadataValue.json(value)
        else:
            metadata[key] = value
    return metadata


# The only retries are `load_with_retries`' own, for transient errors: Dagster's retry policy would also
# retry permanent errors (a bad value, a violated constraint) and start the step over for each.
@dg.op(pool=LOAD_POOL)
def load(
    context: dg.OpExecutionContext,
    config: LoadConfig,
    leads_db: LeadsDatabase,
    state: StateFolder,
    leads: Parts,
    rejected: Parts,
    summary: FileSummary,
) -> LoadResult:
    """Commit the file's leads, history and rejected rows (or, as a plan, show what that would change)."""
    started = time.perf_counter()
    if config.assign == "by_column" and config.owner_column not in summary.mapping:
        raise dg.Failure(
            description=f"{Path(summary.source_file).name}: assign: by_column names the column "
            f"{config.owner_column!r}, which the file does not have; its headers are {list(summary.mapping)}",
            allow_retries=False,
        )
    if summary.scoring is not None and summary.scoring.auto_merge and config.on_existing == "create":
        raise dg.Failure(
            description=f"{Path(summary.source_file).name}: possible_duplicates.auto_merge merges flagged rows into "
            "their candidate, and on_existing: create inserts every row anyway; choose one of them",
            allow_retries=False,
        )
    laps = Laps(context.log)
    # Approving is running the approval job: its Launchpad config is the user's, whatever they type.
    approved = context.job_name == APPROVE_JOB
    awaiting = (config.review or summary.review) and not (approved or config.plan)
    planning = config.plan or awaiting
    plan = PlanReport(state.reports_path / f"{summary.partition_key}.plan.csv") if planning else None
    try:
        scoring_warnings: list[str] = []
        counts = load_with_retries(context, leads_db, leads, rejected, summary, config, laps, plan, scoring_warnings)
    except CountsDoNotAddUp as e:
        raise dg.Failure(
            description=f"{summary.source_file}: counts do not add up, nothing was loaded: {e}", allow_retries=False
        ) from e
    except RetriesExhausted as e:
        raise dg.Failure(
            description=f"{Path(summary.source_file).name}: the leads database stayed unreachable or busy for "
            f"{leads_db.retry_seconds:.0f} s ({e}); nothing was committed. Re-execute from failure (or "
            "`import-pipeline retry RUN_ID`) resumes the load",
            allow_retries=False,
        ) from e
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
        context.log.info(
            f"{summary.source_file}: the same bytes were imported as {counts['already_imported_as']}; skipped"
        )
        # The earlier import's counts: what these bytes (this sheet of them) became.
        record = {"skipped": True, "already_imported_as": counts["already_imported_as"], **committed}
        context.add_output_metadata(as_metadata(record))
        return LoadResult(summary, "skipped", committed, record)

    if scoring_warnings:
        summary = dataclasses.replace(summary, warnings=(*summary.warnings, *scoring_warnings))
    record = import_record(summary, counts, config, laps.seconds, leads_table_columns(leads_db))
    tags = {}
    if plan is not None and "already_imported_as" not in counts:
        # First in the record: what a user opening the partition's events must see before the counts.
        record = ({"awaiting_approval": True} if awaiting else {}) | plan.record() | record
        context.log.info(
            f"{Path(summary.source_file).name}: planned, nothing committed; {plan.changes:,} field changes "
            f"in {plan.path}"
        )
    if awaiting and record.get("planned"):
        tags[AWAITING_TAG] = "launch approve_import_job or decline_import_job for this partition"
        context.log.info(
            f"{summary.partition_key}: awaiting approval. To commit, launch approve_import_job for this partition "
            "(its config may choose on_existing and owners); to refuse the file, decline_import_job"
        )
    if approved and not record.get("planned"):
        planned = latest_plan(context.instance, LEADS_ASSET, summary.partition_key)
        if planned is not None:
            # Approval commits against the table as it is now: what changed since the plan, count by count.
            tags[APPROVED_PLAN_TAG] = record["approved_plan_run_id"] = planned[0]
            record["plan_difference"] = plan_difference(planned[1], counts) or "none: committed as planned"
    # The Runs list shows tags: each import's outcome counts at a glance, without opening the run.
    prefix = f"{OUTCOME_TAG_PREFIX}planned_" if record.get("planned") else OUTCOME_TAG_PREFIX
    tags |= {f"{prefix}{k}": f"{counts.get(k, 0):,}" for k in (*COUNT_KEYS, *DUPLICATE_COUNTS) if counts.get(k)}
    if counts.get("replaces_run_id") and not record.get("planned"):
        # Imported again after a revert: the run of the import it replaces.
        tags[REPLACES_RUN_TAG] = record["replaces_run_id"] = counts["replaces_run_id"]
    context.instance.add_run_tags(context.run_id, tags)
    context.add_output_metadata(as_metadata(record))
    return LoadResult(summary, "planned" if record.get("planned") else "success", committed, record)
