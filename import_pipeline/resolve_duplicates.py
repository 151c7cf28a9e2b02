"""Review of possible duplicates: the queue as an asset, and its resolution (merge, keep separate, undo).

Materializing `possible_duplicates` (its job, `resolve_duplicates_job`, from the Launchpad) first applies the
run's config, then reports the queue: its counts and a sample of open pairs side by side with their reasons.
A merge retires the queued lead (`duplicate_of` its candidate) and fills the candidate's empty fields from it,
in the ledger as an import of its own (`duplicates resolved@RUN`, with `lead_history` rows), so `undo` reverts
it exactly as an import is reverted: changed since, it is left and listed. A pair kept separate is recorded
in `kept_separate` and never queued again.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal, Self

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field, model_validator

from import_pipeline.database import LeadsDatabase, one_value, wait_for_other_imports
from import_pipeline.jobs import leads
from import_pipeline.load import (
    LOCK_TIMEOUT,
    OUTCOME_TAG_PREFIX,
    RetriesExhausted,
    with_retries,
)
from import_pipeline.plan import markdown_cell
from import_pipeline.possible_duplicates import FLAGGED, REVIEW
from import_pipeline.revert import NothingToRevert, RevertResult, conflicts_markdown, revert_import
from import_pipeline.state import StateFolder
from import_pipeline.strategies import field_changes, field_values

RESOLUTION_PREFIX = "duplicates resolved@"  # the ledger's partition key of a resolution: this + its run id
RESOLVE_JOB = "resolve_duplicates_job"
SAMPLE_PAIRS = 20
RESOLVE_COUNTS = ("merged", "kept_separate", "skipped")
SHOWN_FIELDS = ("first_name", "last_name", "company_name", "email", "phone", "city")


class ResolveDuplicatesConfig(dg.Config):
    """What to do with queued pairs before the queue is reported (`show`: nothing)."""

    action: Literal["show", "merge", "keep_separate", "undo"] = Field(
        default="show",
        description="show: report the queue. merge: retire each chosen pair's lead into its candidate (the "
        "candidate's empty fields filled from it). keep_separate: never propose the pair again. undo: revert "
        "the resolution of run `resolution`.",
    )
    pairs: list[int] = Field(default=[], description="The pairs to merge or keep separate, by their `pair` number.")
    min_score: float | None = Field(
        default=None, ge=0, le=1, description="Instead of `pairs`: every open pair from this score."
    )
    band: Literal["any", "flagged", "review"] = Field(
        default="any", description="With min_score: only the pairs of this band."
    )
    resolution: str = Field(default="", description="undo: the run id of the resolve_duplicates_job run to revert.")
    force: bool = Field(default=False, description="undo: revert leads changed since the resolution too.")

    @model_validator(mode="after")
    def _chosen(self) -> Self:
        if self.action in ("merge", "keep_separate"):
            if bool(self.pairs) == (self.min_score is not None):
                raise ValueError(
                    f"{self.action}: give either pairs (their numbers) or min_score, not both, not neither"
                )
        elif self.pairs or self.min_score is not None or self.band != "any":
            raise ValueError(f"{self.action}: pairs, min_score and band choose pairs to merge or keep separate only")
        if (self.action == "undo") != bool(self.resolution):
            raise ValueError("undo needs resolution (a resolve_duplicates_job run id), and only undo takes one")
        return self


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What a merge or keep_separate run did with the pairs it chose."""

    counts: dict[str, int]
    skipped: list[dict[str, Any]]  # pair, why


# The chosen pairs, best first, each with why it cannot be resolved now (NULL: it can).
_CHOOSE = """
    CREATE TEMPORARY TABLE chosen ON COMMIT DROP AS
    SELECT p.id AS pair, p.lead_id, p.candidate_id, p.score, p.status,
           CASE WHEN p.status <> 'open' THEN 'already ' || replace(p.status, '_', ' ')
                    || COALESCE(' by run ' || p.resolved_by_run, '') END AS why
    FROM possible_duplicates p
    WHERE CASE WHEN %(ids)s::bigint[] IS NOT NULL THEN p.id = ANY (%(ids)s::bigint[])
               ELSE p.status = 'open' AND p.score >= %(min_score)s AND (%(band)s::text IS NULL OR p.band = %(band)s)
          END
    UNION ALL
    SELECT id, NULL, NULL, NULL, NULL, 'no such pair' FROM unnest(%(ids)s::bigint[]) AS requested(id)
    WHERE NOT EXISTS (SELECT FROM possible_duplicates p WHERE p.id = requested.id)
"""

# Pairs whose leads are no longer both live, or (merge) whose lead is merged into, or merges into, another
# chosen pair's lead too: left for a later run, which sees the result of this one.
_UNRESOLVABLE = (
    """
    UPDATE chosen c SET why = 'the lead or its candidate is no longer live (deleted or merged since)'
    WHERE c.why IS NULL AND EXISTS (
        SELECT FROM unnest(ARRAY[c.lead_id, c.candidate_id]) AS pair_lead(id)
        WHERE NOT EXISTS (SELECT FROM leads l WHERE l.id = pair_lead.id AND l.deleted_at IS NULL
                          AND l.duplicate_of IS NULL))
    """,
    """
    UPDATE chosen c SET why = 'kept separate already'
    WHERE c.why IS NULL AND EXISTS (SELECT FROM kept_separate k
        WHERE k.lead_id = least(c.lead_id, c.candidate_id) AND k.other_id = greatest(c.lead_id, c.candidate_id))
    """,
)
_CHAINED = """
    UPDATE chosen c SET why = 'pair ' || o.pair || ' of this run merges ' || CASE WHEN o.candidate_id = c.lead_id
        THEN 'into this lead' ELSE 'this candidate away' END || '; run again to resolve it'
    FROM chosen o
    WHERE c.why IS NULL AND o.why IS NULL AND o.pair <> c.pair AND o.score >= c.score
      AND (o.candidate_id = c.lead_id OR o.lead_id = c.candidate_id)
      AND (o.score > c.score OR o.pair < c.pair)
"""


def _merge_statement() -> sql.Composed:
    """Fill the candidate's empty fields from the retired lead, recording each filled field's old and new value."""
    values = field_values("c", "d", incoming_wins=False)
    return sql.SQL(
        """
        WITH old AS (
            SELECT * FROM leads WHERE id = %(candidate)s
        ), changed AS (
            UPDATE leads c SET {assignments}, updated_by_import = %(import_id)s, updated_at = now()
            FROM leads d
            WHERE c.id = %(candidate)s AND d.id = %(lead)s AND ({current}) IS DISTINCT FROM ({incoming})
            RETURNING c.*
        )
        INSERT INTO lead_history (import_id, source_row, lead_id, action, changes)
        SELECT %(import_id)s, %(line)s, u.id, 'merged', {changes}
        FROM changed u JOIN old o ON o.id = u.id
        """
    ).format(
        assignments=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(f), v) for f, v in values.items()),
        current=sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(f)) for f in values),
        incoming=sql.SQL(", ").join(values.values()),
        changes=field_changes(list(values)),
    )


# The queued lead leaves the live leads, pointing at the lead it repeats (revert restores `duplicate_of`).
_RETIRE = """
    WITH retired AS (
        UPDATE leads SET duplicate_of = %(candidate)s, updated_by_import = %(import_id)s, updated_at = now()
        WHERE id = %(lead)s RETURNING id
    )
    INSERT INTO lead_history (import_id, source_row, lead_id, action, changes)
    SELECT %(import_id)s, %(line)s, id, 'updated',
           jsonb_build_object('duplicate_of', jsonb_build_object('old', NULL, 'new', %(candidate)s::bigint))
    FROM retired
"""


def resolve(conn: psycopg.Connection, config: ResolveDuplicatesConfig, run_id: str) -> Resolution:
    """Merge or keep separate the chosen pairs in one transaction, recorded as a resolution in the ledger."""
    with conn.transaction(), conn.cursor() as cur:
        # Imports and resolutions take turns: no import is matching against a lead retired under it.
        wait_for_other_imports(cur)
        cur.execute(
            _CHOOSE,
            {
                "ids": config.pairs or None,
                "min_score": config.min_score,
                "band": None if config.band == "any" else config.band,
            },
        )
        # Bounded, as the load's: an application transaction holding one of these leads makes it start again.
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        # Held from here: what is checked below stays true until the merge is written.
        cur.execute(
            "SELECT count(*) FROM (SELECT FROM leads WHERE id IN (SELECT lead_id FROM chosen UNION "
            "SELECT candidate_id FROM chosen) FOR UPDATE) l"
        )
        for statement in _UNRESOLVABLE:
            cur.execute(statement)
        if config.action == "merge":
            cur.execute(_CHAINED)
        cur.execute("SELECT pair, lead_id, candidate_id FROM chosen WHERE why IS NULL ORDER BY score DESC, pair")
        todo = cur.fetchall()
        import_id = None
        if todo:
            cur.execute(
                """
                INSERT INTO imports (partition_key, content_hash, sheet, run_id, source_file)
                VALUES (%(key)s, %(key)s, '', %(run_id)s, 'possible_duplicates') RETURNING id
                """,
                {"key": RESOLUTION_PREFIX + run_id, "run_id": run_id},
            )
            import_id = one_value(cur)
        merge = _merge_statement()
        for number, (_pair, lead, candidate) in enumerate(todo, start=1):
            if config.action == "merge":
                # Retired first: the candidate may take the lead's email, which live leads cannot share.
                params = {"lead": lead, "candidate": candidate, "import_id": import_id}
                cur.execute(_RETIRE, {**params, "line": 2 * number - 1})
                cur.execute(merge, {**params, "line": 2 * number})
            else:
                cur.execute(
                    "INSERT INTO kept_separate (lead_id, other_id, run_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (min(lead, candidate), max(lead, candidate), run_id),
                )
        status = "merged" if config.action == "merge" else "kept_separate"
        cur.execute(
            """
            UPDATE possible_duplicates p SET status = %s, resolved_at = now(), resolved_by_run = %s
            FROM chosen c WHERE c.pair = p.id AND c.why IS NULL
            """,
            (status, run_id),
        )
        cur.execute("SELECT pair, why FROM chosen WHERE why IS NOT NULL ORDER BY pair")
        skipped = [{"pair": pair, "why": why} for pair, why in cur.fetchall()]
        counts = {"merged": 0, "kept_separate": 0, status: len(todo), "skipped": len(skipped)}
        if import_id is not None:
            cur.execute("UPDATE imports SET counts = %s WHERE id = %s", (json.dumps(counts), import_id))
    return Resolution(counts, skipped)


def undo(conn: psycopg.Connection, resolution: str, run_id: str, force: bool, report: Path) -> RevertResult:
    """Revert the resolution of run `resolution` as an import is reverted; its pairs are open again."""
    return revert_import(conn, RESOLUTION_PREFIX + resolution, run_id, force, report)


# The queue's counts in the asset's metadata: which pairs each counts.
QUEUE_COUNTS: dict[str, sql.Composable] = {
    "open": sql.SQL("status = 'open'"),
    "open_flagged": sql.SQL("status = 'open' AND band = {}").format(sql.Literal(FLAGGED)),
    "open_review": sql.SQL("status = 'open' AND band = {}").format(sql.Literal(REVIEW)),
    **{
        status: sql.SQL("status = {}").format(sql.Literal(status)) for status in ("merged", "kept_separate", "reverted")
    },
}
_QUEUE = sql.SQL("SELECT {} FROM possible_duplicates").format(
    sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(c) for c in QUEUE_COUNTS.values())
)

# The best open pairs, each side's shown fields as one JSON object.
_SAMPLE = sql.SQL(
    """
    SELECT p.id, round(p.score::numeric, 2), p.band,
           (SELECT string_agg(replace(key, '_', ' ') || ': ' || value, '; ' ORDER BY key)
            FROM jsonb_each_text(p.reasons)),
           d.id, i.partition_key, p.source_row, c.id, jsonb_build_object({lead}), jsonb_build_object({candidate})
    FROM possible_duplicates p
    JOIN leads d ON d.id = p.lead_id JOIN leads c ON c.id = p.candidate_id JOIN imports i ON i.id = p.import_id
    WHERE p.status = 'open'
    ORDER BY p.score DESC, p.id
    LIMIT %s
    """
).format(
    **{
        side: sql.SQL(", ").join(
            sql.SQL("{}, {}.{}").format(sql.Literal(f), sql.Identifier(alias), sql.Identifier(f)) for f in SHOWN_FIELDS
        )
        for side, alias in (("lead", "d"), ("candidate", "c"))
    }
)


def _pair_markdown(row: tuple) -> list[str]:
    """One pair: its number, score, band and reasons, then its two leads side by side, field by field."""
    pair, score, band, reasons, lead, partition, line, candidate, left, right = row
    lines = [
        f"**Pair {pair}**: {score} ({band}) — {markdown_cell(reasons)}",
        "",
        f"| | queued: lead {lead} ({markdown_cell(partition)}, line {line}) | possible duplicate of: lead {candidate} |",
        "| --- | --- | --- |",
    ]
    for field in SHOWN_FIELDS:
        lines.append(f"| {field.replace('_', ' ')} | {markdown_cell(left[field])} | {markdown_cell(right[field])} |")
    return [*lines, ""]


def queue_report(conn: psycopg.Connection) -> tuple[dict[str, int], str]:
    """The queue's counts and its best open pairs, each side by side with its reasons (markdown)."""
    with conn.cursor() as cur:
        cur.execute(_QUEUE)
        counts = dict(zip(QUEUE_COUNTS, cur.fetchone() or (), strict=True))
        cur.execute(_SAMPLE, (SAMPLE_PAIRS,))
        rows = cur.fetchall()
    if not rows:
        return counts, "No open pairs: nothing waits for review."
    lines = [line for row in rows for line in _pair_markdown(row)]
    if counts["open"] > len(rows):
        lines.append(f"The best {len(rows)} of {counts['open']:,} open pairs (all of them: table possible_duplicates).")
    lines.append(
        "To resolve: Launchpad of resolve_duplicates_job, `action: merge` or `keep_separate` with `pairs: [N, ...]` "
        "or `min_score: 0.9`."
    )
    return counts, "\n".join(lines)


def _skipped_markdown(skipped: list[dict[str, Any]]) -> dg.MarkdownMetadataValue:
    lines = ["| pair | why not resolved |", "| ---: | --- |"]
    lines += [f"| {s['pair']} | {markdown_cell(s['why'])} |" for s in skipped[:SAMPLE_PAIRS]]
    if len(skipped) > SAMPLE_PAIRS:
        lines.append(f"\nThe first {SAMPLE_PAIRS} of {len(skipped):,} pairs not resolved.")
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(
    deps=[leads],
    kinds={"postgres"},
    metadata={"dagster/table_name": "possible_duplicates"},
    description="Imported leads that probably repeat a live lead under another email (table "
    "`possible_duplicates`), with score, band and reasons. Materialize to see the queue; resolve_duplicates_job "
    "merges pairs or keeps them separate (config action), and undoes a resolution.",
)
def possible_duplicates(
    context: dg.AssetExecutionContext, config: ResolveDuplicatesConfig, leads_db: LeadsDatabase, state: StateFolder
) -> dg.MaterializeResult:
    """Apply the run's resolution, if any, then report the queue."""
    metadata: dict[str, Any] = {"action": config.action}
    tags: dict[str, str] = {}

    def attempt() -> Any:
        with leads_db.connect() as conn:
            if config.action == "undo":
                report = state.reports_path / f"resolution-{config.resolution}.revert.csv"
                return undo(conn, config.resolution, context.run.run_id, config.force, report)
            if config.action in ("merge", "keep_separate"):
                return resolve(conn, config, context.run.run_id)
            return None

    try:
        done = with_retries(context.op_execution_context, leads_db, config.action, attempt)
    except RetriesExhausted as e:
        raise dg.Failure(
            description=f"the leads database stayed unreachable or busy for {leads_db.retry_seconds:.0f} s ({e}); "
            "nothing was changed. Re-execute from failure tries again",
            allow_retries=False,
        ) from e
    except NothingToRevert:
        raise dg.Failure(
            description=f"undo: run {config.resolution} resolved no pairs (no resolution of that run id in the "
            "ledger); the run id is on the resolve_duplicates_job run's page",
            allow_retries=False,
        ) from None
    except psycopg.Error as e:
        raise dg.Failure(
            description=f"the database refused the {config.action} ({type(e).__name__}): {e}; nothing was changed",
            allow_retries=False,
        ) from e
    if isinstance(done, Resolution):
        metadata |= {k: done.counts[k] for k in RESOLVE_COUNTS}
        if done.counts["merged"] or done.counts["kept_separate"]:
            metadata["resolution"] = RESOLUTION_PREFIX + context.run.run_id
        if done.skipped:
            metadata["not_resolved"] = _skipped_markdown(done.skipped)
        tags = {f"{OUTCOME_TAG_PREFIX}{k}": f"{done.counts[k]:,}" for k in RESOLVE_COUNTS if done.counts[k]}
        context.log.info(
            f"{config.action}: {done.counts['merged']:,} pairs merged, {done.counts['kept_separate']:,} kept "
            f"separate, {done.counts['skipped']:,} not resolved"
        )
    elif isinstance(done, RevertResult):
        counts = done.counts
        metadata |= {"undone_run_id": config.resolution, "already_undone": done.already_reverted, **counts}
        if not done.already_reverted:
            metadata["conflicts"] = conflicts_markdown(done.conflicts, done.listed)
        tags = {"import_pipeline/undone_run": config.resolution}
        context.log.info(
            f"undo of {config.resolution}: {counts.get('restored', 0):,} leads restored, "
            f"{counts.get('conflict', 0):,} conflicts left as they are"
        )
    with leads_db.connect() as conn:
        counts, sample = queue_report(conn)
    metadata |= {**counts, "open_pairs": dg.MetadataValue.md(sample)}
    if tags:
        context.instance.add_run_tags(context.run.run_id, tags)
    return dg.MaterializeResult(metadata=metadata)


resolve_duplicates_job = dg.define_asset_job(
    RESOLVE_JOB,
    selection=dg.AssetSelection.assets(possible_duplicates),
    tags={"import_pipeline/target": "possible_duplicates"},
    description="Review possible duplicates: with the default config it reports the queue; action merge or "
    "keep_separate resolves pairs (pairs: [N, ...] or min_score), action undo with resolution: RUN_ID reverts "
    "a resolution.",
)
