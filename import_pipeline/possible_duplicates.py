"""Possible duplicates: the scoring's configuration, what the database needs for it, and the review queue.

`scoring.py` scores an import's rows; the best candidate of each row from `review_at` goes to
`possible_duplicates`: `flagged` from `flag_at`, `review` below it.
"""

import dataclasses
from typing import Self

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field, model_validator

# What the scoring needs from the server: names' sounds (dmetaphone). It ships with PostgreSQL (contrib) and
# is a trusted extension, which a database owner may create without superuser rights.
EXTENSIONS = ("fuzzystrmatch",)
FLAGGED, REVIEW = "flagged", "review"
# The import's counts of them (metadata and run tags, beside COUNT_KEYS: they are not outcomes).
QUEUED_COUNTS = ("possible_duplicates", "to_review")  # an import's rows left open in the queue: flagged, review
DUPLICATE_COUNTS = (*QUEUED_COUNTS, "auto_merged")
# Expression indexes on `leads` that scoring used before `lead_comparison` (built by earlier versions): every
# write of the application paid for them (measured: 59 us a lead at 1M leads, four of them).
_FORMER_INDEXES = (
    "leads_block_name_company", "leads_block_company_first_initial", "leads_block_company_first",
    "leads_block_phone", "leads_block_email_local",
)  # fmt: skip


class PossibleDuplicatesConfig(dg.Config):
    """Scoring of rows no exact key matched, against live leads and the file's other rows."""

    enabled: bool = Field(
        default=False,
        description="Score each row no match key matched against similar live leads and the file's other rows "
        "(name with typos, nicknames, initials and accents; company without legal forms; email; phone; city).",
    )
    flag_at: float = Field(
        # Measured on bench/possible_duplicates.py's labelled data: no wrong pair scored 0.65 or more.
        default=0.7,
        ge=0,
        le=1,
        description="From this score a row is flagged as a possible duplicate.",
    )
    review_at: float = Field(
        # At 0.56 (same first and last name, another company, a name-based address, same city) 124 wrong pairs
        # to 7 right ones on bench/possible_duplicates.py's seed 2: namesakes. Below, ten wrong to one right.
        default=0.57,
        ge=0,
        le=1,
        description="From this score (below flag_at) a row goes to the review queue.",
    )
    auto_merge: bool = Field(
        default=False,
        description="Merge flagged rows into their candidate (empty fields filled, as on_existing: merge) instead "
        "of inserting them; each merge is in the import's history and reverted with it.",
    )
    max_block: int = Field(
        default=20,
        ge=1,
        description="A blocking key shared by more live leads than this is not used (too common to tell apart).",
    )

    @model_validator(mode="after")
    def _bands_in_order(self) -> Self:
        if self.review_at > self.flag_at:
            raise ValueError(f"review_at ({self.review_at}) must not be above flag_at ({self.flag_at})")
        return self


@dataclasses.dataclass(frozen=True)
class DuplicateScoring:
    """The scoring an import applies (`PossibleDuplicatesConfig`, as the steps hand it on)."""

    flag_at: float = 0.7
    review_at: float = 0.57
    auto_merge: bool = False
    max_block: int = 20

    @classmethod
    def from_config(cls, config: PossibleDuplicatesConfig) -> "DuplicateScoring | None":
        if not config.enabled:
            return None
        return cls(config.flag_at, config.review_at, config.auto_merge, config.max_block)


def ensure_scoring(conn: psycopg.Connection) -> str | None:
    """Make the database ready to score (its extensions; the former blocking indexes dropped): returns why
    scoring is off on this server, None when it is on. `conn` is in autocommit."""
    missing = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM unnest(%s::text[]) AS e(name) WHERE name NOT IN (SELECT extname FROM pg_extension)",
            (list(EXTENSIONS),),
        )
    ]
    try:
        with conn.transaction():
            for name in missing:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
    except psycopg.Error as e:
        return (
            f"possible-duplicate scoring is off: this server cannot provide the extension(s) {', '.join(missing)} "
            f"({type(e).__name__}: {' '.join(str(e).split())}); ask its administrator to install PostgreSQL's "
            "contrib modules or run CREATE EXTENSION fuzzystrmatch. Exact matching is unaffected"
        )
    former = conn.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s)", (list(_FORMER_INDEXES),))
    for (index,) in former.fetchall():
        # Concurrently: the application's reads and writes of `leads` go on.
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(index)))
    return None


def match_flagged(cur: psycopg.Cursor, staging: sql.Identifier) -> int:
    """Auto-merge: point each flagged row at its candidate lead, to be merged into it; returns how many."""
    cur.execute(
        sql.SQL(
            """
            UPDATE {staging} s SET match_id = f.lead_id, fuzzy_match = true FROM scored f
            WHERE f.source_row = s.source_row AND f.band = {flagged} AND f.lead_id IS NOT NULL
            """
        ).format(staging=staging, flagged=sql.Literal(FLAGGED))
    )
    return cur.rowcount


def record_possible_duplicates(cur: psycopg.Cursor, staging: sql.Identifier, import_id: int) -> dict[str, int]:
    """Queue each scored row that became a lead (or was merged into its candidate) with the lead it repeats;
    returns the `DUPLICATE_COUNTS`."""
    # The leads this import inserted for scored rows and their in-file candidates, found by one join: looked up
    # row by row (`leads_created_by_import` only narrows to the import), 21,000 rows took 16 s at 100,000.
    cur.execute(
        """
        CREATE TEMPORARY TABLE inserted_for_scored ON COMMIT DROP AS
        SELECT l.source_row, l.id FROM leads l
        WHERE l.created_by_import = %(import_id)s AND l.source_row IN (
            SELECT source_row FROM scored UNION SELECT candidate_row FROM scored WHERE candidate_row IS NOT NULL)
        """,
        {"import_id": import_id},
    )
    cur.execute("ANALYZE inserted_for_scored")
    cur.execute(
        sql.SQL(
            """
            WITH fate AS (
                SELECT f.*, o.action, COALESCE(s.fuzzy_match, false) AS merged,
                       COALESCE(o.lead_id, l.id) AS became, COALESCE(f.lead_id, co.lead_id, cl.id) AS candidate
                FROM scored f
                LEFT JOIN {staging} s ON s.source_row = f.source_row
                LEFT JOIN outcomes o ON o.source_row = f.source_row
                LEFT JOIN inserted_for_scored l ON o.source_row IS NULL AND l.source_row = f.source_row
                LEFT JOIN outcomes co ON co.source_row = f.candidate_row
                LEFT JOIN inserted_for_scored cl ON cl.source_row = f.candidate_row
            ), queued AS (
                INSERT INTO possible_duplicates
                    (import_id, source_row, lead_id, candidate_id, score, band, reasons, status)
                SELECT %(import_id)s, source_row, became, candidate, score, band, reasons,
                       CASE WHEN merged THEN 'merged' ELSE 'open' END
                FROM fate
                -- A new lead, or one merged into its candidate; not a row that became an in-file duplicate or
                -- found its lead by a key after all (the application inserted it meanwhile).
                WHERE became IS NOT NULL AND candidate IS NOT NULL AND (merged OR became <> candidate)
                  -- A pair a user kept separate is never proposed again.
                  AND NOT EXISTS (SELECT FROM kept_separate k
                                  WHERE k.lead_id = least(became, candidate) AND k.other_id = greatest(became, candidate))
                  AND (action IS NULL OR action IN ('inserted', 'created') OR (merged AND action IN ('merged', 'skipped')))
                RETURNING band, status
            )
            SELECT count(*) FILTER (WHERE band = {flagged} AND status = 'open'),
                   count(*) FILTER (WHERE band = {review}),
                   count(*) FILTER (WHERE status = 'merged')
            FROM queued
            """
        ).format(staging=staging, flagged=sql.Literal(FLAGGED), review=sql.Literal(REVIEW)),
        {"import_id": import_id},
    )
    row = cur.fetchone()
    assert row is not None
    return dict(zip(DUPLICATE_COUNTS, row, strict=True))
