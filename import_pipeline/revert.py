"""Revert: take a committed import back in one transaction, without clobbering what changed since.

Leads the import inserted or created are removed; every field it updated or merged gets its old value
back (`lead_history.changes`). A lead changed since the import, by the application or a later import,
is left as it is and listed as a conflict, unless `force`. The import stays in the ledger, marked
reverted, so its file can be imported again.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field

from import_pipeline.database import LeadsDatabase, one_value, wait_for_other_imports
from import_pipeline.landing import landed_files_partitions_def
from import_pipeline.ledger import latest_import
from import_pipeline.load import (
    LEADS_ASSET,
    LOCK_TIMEOUT,
    OUTCOME_TAG_PREFIX,
    RetriesExhausted,
    with_retries,
)
from import_pipeline.plan import markdown_table, report_from_query, spreadsheet_safe
from import_pipeline.schema import (
    CANONICAL_FIELDS,
    DUPLICATE_OF,
    EXTRA,
    OWNER,
    PHONE_E164,
    REVERT_COUNTS,
    REVERT_OUTCOMES,
)
from import_pipeline.state import StateFolder

CHANGED_ACTIONS = ("inserted", "created", "updated", "merged")
SAMPLE_CONFLICTS = 20
REPORT_COLUMNS = ("line", "lead_id", "outcome", "field", "written_by_import", "current_value", "why")


class RevertConfig(dg.Config):
    """Whether leads changed since the import are reverted anyway."""

    force: bool = Field(
        default=False,
        description="Revert leads changed since the import too (by the application or a later import), "
        "overwriting those changes; without it they are left as they are and listed as conflicts.",
    )


class NothingToRevert(Exception):
    """The partition has no committed import."""


@dataclasses.dataclass(frozen=True)
class RevertResult:
    """What a revert did: counts per outcome, the first conflicts, the report; or the earlier revert it found."""

    import_id: int
    import_run_id: str
    counts: dict[str, int]
    conflicts: list[dict[str, Any]]  # the first of the listed fields
    listed: int  # the fields the report lists (of conflicts, and of overridden changes with `force`)
    report: str
    already_reverted: bool = False


# What the import changed, one row per source row (`import_outcomes` finds inserted leads by
# `created_by_import`), and what the revert will do with each.
_COLLECT = """
    CREATE TEMPORARY TABLE revert_rows ON COMMIT DROP AS
    SELECT source_row, lead_id, action, changes, NULL::text AS outcome, NULL::jsonb AS detail, false AS overridden
    FROM import_outcomes WHERE import_id = %(import_id)s AND action IN ('inserted', 'created', 'updated', 'merged')
"""

# Leads the revert cannot remove or restore whatever `force` says: kept and listed.
_BLOCKED = (
    # Another lead is flagged as a possible duplicate of it: removing it would break that link.
    """
    UPDATE revert_rows r SET outcome = 'conflict', detail = jsonb_build_object('duplicate_of', jsonb_build_object(
        'written', 'a new lead', 'current', 'lead ' || d.id || ' is flagged as its possible duplicate',
        'why', 'another lead points at it; revert that lead first'))
    FROM leads d
    WHERE r.outcome IS NULL AND r.action IN ('inserted', 'created') AND d.duplicate_of = r.lead_id
      AND NOT EXISTS (SELECT FROM revert_rows o WHERE o.lead_id = d.id AND o.action IN ('inserted', 'created'))
    """,
    # A lead a resolution retired as a duplicate: live again, its email would be shared with another live lead.
    """
    UPDATE revert_rows r SET outcome = 'conflict', detail = jsonb_build_object('duplicate_of', jsonb_build_object(
        'written', r.changes->'duplicate_of'->'new', 'current', to_jsonb(l.duplicate_of),
        'why', 'lead ' || o.id || ' has its email ' || l.email || ' now'))
    FROM leads l, leads o
    WHERE r.outcome IS NULL AND r.changes ? 'duplicate_of' AND l.id = r.lead_id
      AND o.email_key = l.email_key AND o.id <> l.id AND o.deleted_at IS NULL AND o.duplicate_of IS NULL
    """,
    # Its old email belongs to another live lead now: two live leads cannot share an email.
    """
    UPDATE revert_rows r SET outcome = 'conflict', detail = jsonb_build_object('email', jsonb_build_object(
        'written', r.changes->'email'->'new', 'current', to_jsonb(l.email),
        'why', 'lead ' || o.id || ' has the old email ' || (r.changes->'email'->>'old') || ' now'))
    FROM leads l, leads o
    WHERE r.outcome IS NULL AND r.action IN ('updated', 'merged') AND r.changes ? 'email'
      AND l.id = r.lead_id AND l.deleted_at IS NULL AND l.duplicate_of IS NULL
      AND o.email_key = lead_email_key(r.changes->'email'->>'old') AND o.id <> l.id
      AND o.deleted_at IS NULL AND o.duplicate_of IS NULL
    """,
)

# Leads changed since the import: conflicts, or with `force` reverted anyway (`overridden`).
_CHANGED_SINCE = (
    # An updated or merged field no longer holds the value the import wrote.
    """
    UPDATE revert_rows r SET outcome = {outcome}, overridden = {forced}, detail = (
        SELECT jsonb_object_agg(c.key, jsonb_build_object('written', c.value->'new', 'current', to_jsonb(l) -> c.key,
            'why', 'changed since the import'))
        FROM jsonb_each(r.changes) c WHERE (to_jsonb(l) -> c.key) IS DISTINCT FROM (c.value->'new'))
    FROM leads l
    WHERE r.outcome IS NULL AND r.action IN ('updated', 'merged') AND l.id = r.lead_id AND EXISTS (
        SELECT FROM jsonb_each(r.changes) c WHERE (to_jsonb(l) -> c.key) IS DISTINCT FROM (c.value->'new'))
    """,
    # A new lead whose row is no longer the version the import wrote (another transaction's `xmin`; for imports
    # recorded before `xids` were, a later import's `updated_by_import`), or that a later import matched.
    """
    UPDATE revert_rows r SET outcome = {outcome}, overridden = {forced}, detail = COALESCE((
        SELECT jsonb_object_agg(c.key, jsonb_build_object('written', c.value->'old', 'current', to_jsonb(l) -> c.key,
            'why', 'changed since by import ' || i.partition_key))
        FROM lead_history h JOIN imports i ON i.id = h.import_id CROSS JOIN LATERAL jsonb_each(h.changes) c
        WHERE h.lead_id = l.id AND h.import_id <> %(import_id)s AND i.reverted_at IS NULL
    ), (
        SELECT jsonb_build_object('(lead)', jsonb_build_object('written', 'a new lead',
            'current', 'matched by import ' || i.partition_key || ' (' || h.action || ')',
            'why', 'a later import found its rows duplicates of this lead'))
        FROM lead_history h JOIN imports i ON i.id = h.import_id
        WHERE h.lead_id = l.id AND h.import_id <> %(import_id)s AND i.reverted_at IS NULL LIMIT 1
    ), jsonb_build_object('(lead)', jsonb_build_object('written', 'a new lead', 'current', 'changed since',
        'why', 'changed since the import, by the application')))
    FROM leads l
    WHERE r.outcome IS NULL AND r.action IN ('inserted', 'created') AND l.id = r.lead_id AND (
        CASE WHEN %(xids)s::bigint[] IS NULL THEN l.updated_by_import IS DISTINCT FROM %(import_id)s
             ELSE NOT (l.xmin::text::bigint = ANY (%(xids)s::bigint[])) END
        OR EXISTS (SELECT FROM lead_history h JOIN imports i ON i.id = h.import_id
                   WHERE h.lead_id = l.id AND h.import_id <> %(import_id)s AND i.reverted_at IS NULL))
    """,
)

_GONE = """
    UPDATE revert_rows r SET outcome = 'untouched', detail = jsonb_build_object('why', 'the lead was deleted since')
    WHERE r.outcome IS NULL AND NOT EXISTS (SELECT FROM leads l WHERE l.id = r.lead_id AND l.deleted_at IS NULL)
"""

_REMOVE = """
    WITH gone AS (
        DELETE FROM leads l USING revert_rows r
        WHERE l.id = r.lead_id AND r.action IN ('inserted', 'created') AND r.outcome = 'removed'
        RETURNING l.id, to_jsonb(l) AS lead
    )
    UPDATE revert_rows r SET outcome = 'removed', detail = CASE WHEN r.overridden THEN r.detail ELSE g.lead END
    FROM gone g WHERE r.lead_id = g.id
"""


# The possible-duplicates queue follows: an import's pairs (open, or merged by its auto-merge and restored) are
# `reverted`; a resolution's pairs are open again, but for a pair whose lead stays as the resolution left it.
_QUEUE_AFTER_REVERT = """
    WITH imported AS (
        UPDATE possible_duplicates p SET status = 'reverted', resolved_at = now(), resolved_by_run = %(revert_run)s
        WHERE p.import_id = %(import_id)s
          AND (p.status = 'open' OR (p.status = 'merged' AND p.resolved_by_run IS NULL AND NOT EXISTS (
              SELECT FROM revert_rows r WHERE r.outcome = 'conflict' AND r.lead_id = p.candidate_id)))
    ), reopened AS (
        UPDATE possible_duplicates p SET status = 'open', resolved_at = NULL, resolved_by_run = NULL
        WHERE p.resolved_by_run = %(run_id)s AND p.status IN ('merged', 'kept_separate')
          AND NOT EXISTS (SELECT FROM revert_rows r
                          WHERE r.outcome = 'conflict' AND r.lead_id IN (p.lead_id, p.candidate_id))
    )
    DELETE FROM kept_separate WHERE run_id = %(run_id)s
"""


def _restore() -> sql.Composed:
    """Every field the import changed gets its old value back; the others keep theirs (the application's too)."""
    text_fields = (*CANONICAL_FIELDS, PHONE_E164, OWNER)
    assignments = [
        sql.SQL("{f} = CASE WHEN r.changes ? {name} THEN r.changes->{name}->>'old' ELSE l.{f} END").format(
            f=sql.Identifier(f), name=sql.Literal(f)
        )
        for f in text_fields
    ]
    assignments.append(
        sql.SQL(
            "{f} = CASE WHEN r.changes ? {name} THEN NULLIF(r.changes->{name}->'old', 'null') ELSE l.{f} END"
        ).format(f=sql.Identifier(EXTRA), name=sql.Literal(EXTRA))
    )
    # A resolution's merge retired a lead as a duplicate of its candidate (resolve_duplicates.py).
    assignments.append(
        sql.SQL("{f} = CASE WHEN r.changes ? {name} THEN (r.changes->{name}->>'old')::bigint ELSE l.{f} END").format(
            f=sql.Identifier(DUPLICATE_OF), name=sql.Literal(DUPLICATE_OF)
        )
    )
    return sql.SQL(
        """
        UPDATE leads l SET {assignments}, updated_at = now(),
            -- The last import that still stands behind the lead's values.
            updated_by_import = COALESCE((
                SELECT max(h.import_id) FROM lead_history h JOIN imports i ON i.id = h.import_id
                WHERE h.lead_id = l.id AND h.action IN ('updated', 'merged') AND h.import_id <> %(import_id)s
                  AND i.reverted_at IS NULL), l.created_by_import)
        FROM revert_rows r
        WHERE l.id = r.lead_id AND r.action IN ('updated', 'merged') AND r.outcome = 'restored'
        """
    ).format(assignments=sql.SQL(", ").join(assignments))


# Each listed field of each conflict (and, with `force`, of each overridden change), in line order.
_CONFLICTS = sql.SQL(
    """
    SELECT r.source_row AS line, r.lead_id, CASE WHEN r.overridden THEN 'overridden' ELSE r.outcome END AS outcome,
           c.key AS field, {written} AS written_by_import, {current} AS current_value, c.value->>'why' AS why
    FROM revert_rows r CROSS JOIN LATERAL jsonb_each(r.detail) c
    WHERE r.outcome = 'conflict' OR r.overridden
    ORDER BY r.source_row, c.key
    """
).format(
    written=spreadsheet_safe("COALESCE(c.value->>'written', '')"),
    current=spreadsheet_safe("COALESCE(c.value->>'current', '')"),
)


def revert_import(conn: psycopg.Connection, partition_key: str, run_id: str, force: bool, report: Path) -> RevertResult:
    """Revert the partition's committed import in one transaction; an import reverted already is left as it is."""
    with conn.transaction(), conn.cursor() as cur:
        # Loads and reverts take turns: nothing an import is matching against changes under it.
        wait_for_other_imports(cur)
        target = latest_import(cur, partition_key)
        if target is None:
            raise NothingToRevert(partition_key)
        if target["reverted_at"] is not None:
            cur.execute("SELECT counts FROM import_reverts WHERE import_id = %s", (target["id"],))
            earlier = cur.fetchone()
            return RevertResult(target["id"], target["run_id"], earlier[0] if earlier else {}, [], 0, "", True)
        params = {"import_id": target["id"], "xids": target["xids"]}
        cur.execute(_COLLECT, params)
        cur.execute("ANALYZE revert_rows")  # temporary tables are never analyzed automatically
        # Every lock the revert waits for on `leads` is bounded, as the load's are; then it starts again.
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        cur.execute(
            "SELECT count(*) FROM (SELECT FROM leads WHERE id IN (SELECT lead_id FROM revert_rows) FOR UPDATE) l"
        )
        cur.execute(_GONE)
        for statement in _BLOCKED:
            cur.execute(statement)
        outcome = {"inserted": "removed", "updated": "restored"}
        for statement, action in zip(_CHANGED_SINCE, ("updated", "inserted"), strict=True):
            cur.execute(
                sql.SQL(statement).format(
                    outcome=sql.Literal(outcome[action] if force else "conflict"), forced=sql.Literal(force)
                ),
                params,
            )
        cur.execute(
            "UPDATE revert_rows SET outcome = CASE WHEN action IN ('inserted', 'created') THEN 'removed' "
            "ELSE 'restored' END WHERE outcome IS NULL"
        )
        cur.execute(_REMOVE)
        cur.execute(_restore(), params)
        cur.execute("SET LOCAL lock_timeout = 0")
        cur.execute(_QUEUE_AFTER_REVERT, {**params, "run_id": target["run_id"], "revert_run": run_id})
        cur.execute(
            sql.SQL("SELECT {}, count(*) FILTER (WHERE overridden), count(*) FROM revert_rows").format(
                sql.SQL(", ").join(
                    sql.SQL("count(*) FILTER (WHERE outcome = {})").format(sql.Literal(o)) for o in REVERT_OUTCOMES
                )
            )
        )
        counts: dict[str, int] = dict(zip(REVERT_COUNTS, cur.fetchone() or (), strict=True))
        if sum(counts[o] for o in REVERT_OUTCOMES) != counts["rows_changed"]:
            raise AssertionError(f"revert counts do not add up: {counts}")
        listed, conflicts = report_from_query(cur, _CONFLICTS, report, REPORT_COLUMNS, SAMPLE_CONFLICTS)
        cur.execute(
            "INSERT INTO import_reverts (import_id, run_id, forced, counts) VALUES (%s, %s, %s, %s) RETURNING id",
            (target["id"], run_id, force, json.dumps(counts)),
        )
        revert_id = one_value(cur)
        cur.execute(
            "INSERT INTO revert_history (revert_id, source_row, lead_id, action, detail) "
            "SELECT %s, source_row, lead_id, outcome, detail FROM revert_rows",
            (revert_id,),
        )
        cur.execute("UPDATE imports SET reverted_at = now() WHERE id = %s", (target["id"],))
    return RevertResult(target["id"], target["run_id"], counts, conflicts, listed, str(report))


def conflicts_markdown(conflicts: list[dict[str, Any]], total: int) -> dg.MarkdownMetadataValue:
    """The first conflicts as a markdown table: lead, field, the value the import wrote, the value now."""
    if not conflicts:
        return dg.MetadataValue.md("No conflicts: nothing was changed since the import.")
    header = "| line | lead | outcome | field | written by the import | now | why |"
    lines = markdown_table(header, REPORT_COLUMNS, conflicts)
    if total > len(conflicts):
        lines.append(f"\nThe first {len(conflicts)} of {total:,} fields listed; every one is in the revert report.")
    return dg.MetadataValue.md("\n".join(lines))


@dg.op
def revert(context: dg.OpExecutionContext, config: RevertConfig, leads_db: LeadsDatabase, state: StateFolder) -> None:
    """Revert the committed import of this run's partition."""
    if not context.has_partition_key:
        raise dg.Failure(
            description="pick the partition (the imported file) to revert: in the Launchpad of revert_import_job, "
            "or `import-pipeline revert PARTITION`",
            allow_retries=False,
        )
    key = context.partition_key
    report = state.reports_path / f"{key}.revert.csv"

    def attempt() -> RevertResult:
        with leads_db.connect() as conn:
            return revert_import(conn, key, context.run_id, config.force, report)

    try:
        result = with_retries(context, leads_db, "revert", attempt)
    except RetriesExhausted as e:
        raise dg.Failure(
            description=f"{key}: the leads database stayed unreachable or busy for {leads_db.retry_seconds:.0f} s "
            f"({e}); nothing was changed. Re-execute from failure (or `import-pipeline retry RUN_ID`) tries again",
            allow_retries=False,
        ) from e
    except NothingToRevert:
        raise dg.Failure(
            description=f"{key}: no committed import of this partition to revert (it was never imported, or its "
            "import failed or was only planned)",
            allow_retries=False,
        ) from None
    except psycopg.Error as e:
        raise dg.Failure(
            description=f"{key}: the database refused the revert ({type(e).__name__}): {e}; nothing was changed",
            allow_retries=False,
        ) from e
    counts = result.counts
    if result.already_reverted:
        context.log.info(f"{key}: its import (run {result.import_run_id}) was reverted already; nothing changed")
    else:
        context.log.info(
            f"{key}: reverted the import of run {result.import_run_id}: {counts['removed']:,} leads removed, "
            f"{counts['restored']:,} restored, {counts['conflict']:,} conflicts left as they are, "
            f"{counts['untouched']:,} untouched"
        )
    metadata: dict[str, Any] = {
        "reverted": True,
        "already_reverted": result.already_reverted,
        "reverted_run_id": result.import_run_id,
        **{k: counts.get(k, 0) for k in REVERT_COUNTS},
        "force": config.force,
    }
    if not result.already_reverted:
        metadata["conflicts"] = conflicts_markdown(result.conflicts, result.listed)
        metadata["revert_report"] = dg.MetadataValue.path(result.report)
    context.instance.add_run_tags(
        context.run_id,
        {f"{OUTCOME_TAG_PREFIX}{k}": f"{counts.get(k, 0):,}" for k in (*REVERT_OUTCOMES, "overridden") if counts.get(k)}
        | {"import_pipeline/reverted_run": result.import_run_id},
    )
    context.add_output_metadata(metadata)
    # The partition's record: its import stands materialized in Dagster, this observation says it was reverted.
    context.log_event(dg.AssetObservation(LEADS_ASSET, partition=key, metadata=metadata))


@dg.job(
    partitions_def=landed_files_partitions_def,
    tags={"import_pipeline/target": "leads", "import_pipeline/action": "revert"},
    description="Revert the committed import of a partition: remove the leads it added, restore the fields it "
    "changed; leads changed since are left and listed (config force: true reverts them too).",
)
def revert_import_job():
    """Revert one partition's import."""
    revert()
