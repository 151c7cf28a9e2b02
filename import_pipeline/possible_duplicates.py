"""Possible duplicates: rows no exact key matched, scored against live leads and the file's other rows.

A row is compared only with the leads that share one of its blocking keys (`BLOCKS`), each an
expression index on `leads`, so the work grows with the file, not with the table; a key shared by
more than `max_block` leads (a very common surname at a very common company) says too little and is
skipped. Each compared pair gets a verdict per field (`_verdicts`), points per verdict (`WEIGHTS`) and a
score from 0 to 1; the best candidate of each row above `review_at` goes to `possible_duplicates`:
`flagged` from `flag_at`, `review` below it. Runs in the load's transaction, on its staging table.
"""

import dataclasses
import importlib.resources
import io
from typing import Self

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field, model_validator

from import_pipeline.schema import LIVE, build_index_concurrently

# What the scoring needs from the server: both ship with PostgreSQL (contrib) and are trusted extensions,
# which a database owner may create without superuser rights.
EXTENSIONS = ("pg_trgm", "fuzzystrmatch")
FLAGGED, REVIEW = "flagged", "review"
# The import's counts of them (metadata and run tags, beside COUNT_KEYS: they are not outcomes).
QUEUED_COUNTS = ("possible_duplicates", "to_review")  # an import's rows left open in the queue: flagged, review
DUPLICATE_COUNTS = (*QUEUED_COUNTS, "auto_merged")
# Any constant works; the migration lock's neighbour.
_SETUP_LOCK = 7_246_003
# Local parts that name a role, not a person: the same `info@` at two companies says nothing.
ROLE_LOCAL_PARTS = (
    "info", "contact", "sales", "admin", "hello", "office", "support", "marketing", "team", "mail", "noreply",
    "enquiries", "accounts", "billing", "hr", "jobs", "press", "service", "webmaster",
)  # fmt: skip
# Addresses anyone can have: the same domain there says nothing of the company.
FREE_MAIL_DOMAINS = (
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.fr", "yahoo.co.uk", "hotmail.com", "hotmail.fr",
    "outlook.com", "live.com", "msn.com", "icloud.com", "me.com", "aol.com", "protonmail.com", "proton.me",
    "gmx.de", "gmx.net", "web.de", "orange.fr", "free.fr", "laposte.net", "yandex.ru", "mail.ru", "qq.com",
    "163.com",
)  # fmt: skip

# The functions that need the extensions, created with them (schema.py's migration 11 has the rest).
_FUNCTIONS = sql.SQL(
    """
    -- Double metaphone of the name as fuzzy text: Smith = Smyth, Müller = Muller = Mueller.
    CREATE OR REPLACE FUNCTION lead_name_sound(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN NULLIF(dmetaphone(lead_fuzzy_text(t)), '');
    CREATE OR REPLACE FUNCTION lead_block_name_company(last_name text, company_name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN lead_name_sound(last_name) || '|' || lead_company_word(company_name);
    -- With the surname's initial: a typo that changes a surname's sound mostly keeps its first letter, and
    -- without it colleagues sharing a first name made most pairs (measured: 562,527 pairs for 20,000 rows).
    CREATE OR REPLACE FUNCTION lead_block_company_first_initial(company_name text, first_name text, last_name text)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN lead_company_word(company_name) || '|' || lead_name_sound(first_name) || '|'
        || left(lead_fuzzy_text(last_name), 1);
    -- Of the email itself: a generated column (email_key) cannot feed the staging table's own generated columns.
    CREATE OR REPLACE FUNCTION lead_block_email_local(email text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN length(lead_email_local(lead_email_key(email))) >= 4
                 AND lead_email_local(lead_email_key(email)) <> ALL ({roles})
        THEN lead_email_local(lead_email_key(email)) END;
    """
).format(roles=sql.Literal(list(ROLE_LOCAL_PARTS)))


@dataclasses.dataclass(frozen=True)
class Block:
    """A blocking key: rows are compared with the leads that share it."""

    column: str  # the staging table's column
    function: str  # the SQL function of a lead's own columns
    arguments: tuple[str, ...]

    @property
    def index(self) -> str:
        return f"leads_{self.column}"

    def of(self, table: str) -> sql.Composable:
        """The key computed from `table`'s columns (for `leads`, the very expression its index holds)."""
        return sql.SQL("{}({})").format(
            sql.Identifier(self.function),
            sql.SQL(", ").join(sql.Identifier(table, a) for a in self.arguments),
        )


# Together they find a person again under another email: by surname and company, by first name, surname
# initial and company (a typo that changes the surname's sound), by phone, by the email's local part.
BLOCKS = (
    Block("block_name_company", "lead_block_name_company", ("last_name", "company_name")),
    Block(
        "block_company_first_initial", "lead_block_company_first_initial", ("company_name", "first_name", "last_name")
    ),
    Block("block_phone", "lead_phone_digits", ("phone_e164", "phone")),
    Block("block_email_local", "lead_block_email_local", ("email",)),
)

# Points per field verdict; the score is their sum over 100, between 0 and 1. A surname or first name
# that differs weighs most: colleagues share a company, a domain and a city, relatives a surname too.
WEIGHTS: dict[str, dict[str, int]] = {
    "first_name": {"same": 20, "nickname": 16, "typo": 14, "initial": 10, "different": -25},
    "last_name": {"same": 30, "typo": 22, "sounds alike": 16, "different": -35},
    "company": {"same": 15, "similar": 8, "different": -5},
    # A local part made of the person's own name (john.smith) is shared by namesakes; another one is not.
    "email": {"same local part": 20, "same name-based local part": 6, "same domain": 5},
    "phone": {"same": 20, "different": -5},
    "city": {"same": 5, "different": -5},
}


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
        default=50,
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
    max_block: int = 50

    @classmethod
    def from_config(cls, config: PossibleDuplicatesConfig) -> "DuplicateScoring | None":
        if not config.enabled:
            return None
        return cls(config.flag_at, config.review_at, config.auto_merge, config.max_block)


def _fill_first_name_forms(cur: psycopg.Cursor) -> None:
    """Each name of the `nicknames` package's list with its formal names (every formal name is its own form)."""
    text = importlib.resources.files("nicknames").joinpath("names.csv").read_text(encoding="utf-8")
    pairs: set[tuple[str, str]] = set()
    for line in text.splitlines()[1:]:
        formal, relationship, name = (part.strip().lower() for part in line.split(","))
        if relationship == "has_nickname" and formal and name:
            pairs |= {(formal, formal), (name, formal)}
    buffer = io.StringIO("".join(f"{name}\t{formal}\n" for name, formal in sorted(pairs)))
    with cur.copy("COPY first_name_forms (name, formal) FROM STDIN") as copy:
        copy.write(buffer.getvalue())


def ensure_scoring(conn: psycopg.Connection) -> tuple[str | None, list[str]]:
    """Make the database ready to score (extensions, functions, name forms, blocking indexes): returns why
    scoring is off on this server (None when it is on) and the indexes built now.

    `conn` is in autocommit: each blocking index is built concurrently, as writes go on (measured: about
    4 s each at 1M leads, the first time only).
    """
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
            "contrib modules or run CREATE EXTENSION pg_trgm, fuzzystrmatch. Exact matching is unaffected",
            [],
        )
    with conn.transaction():
        # Serialises concurrent first imports; what they create is the same.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
        if conn.execute(
            "SELECT to_regprocedure('lead_block_company_first_initial(text, text, text)') IS NULL"
        ).fetchone() == (True,):
            conn.execute(_FUNCTIONS)
        with conn.cursor() as cur:
            if conn.execute("SELECT NOT EXISTS (SELECT FROM first_name_forms)").fetchone() == (True,):
                _fill_first_name_forms(cur)
                # Unanalyzed, the nickname lookup per pair was planned as a merge join of the whole list.
                cur.execute("ANALYZE first_name_forms")
    # The functions are inlined in the index expressions: the blocking queries below must use them alike.
    built = [b.index for b in BLOCKS if build_index_concurrently(conn, b.index, b.of("leads"))]
    if built:
        # Statistics of the new expressions, for the blocking queries' estimates (a sample: about 1 s at 1M).
        conn.execute("ANALYZE leads")
    return None, built


def staged_block_columns() -> list[sql.Composable]:
    """The staging table's blocking keys, computed from its columns by the same functions as `leads`' indexes."""
    return [
        sql.SQL("{} text GENERATED ALWAYS AS ({}({})) STORED").format(
            sql.Identifier(b.column), sql.Identifier(b.function), sql.SQL(", ").join(map(sql.Identifier, b.arguments))
        )
        for b in BLOCKS
    ]


def _weighted(field: str) -> sql.Composable:
    """The points of `field`'s verdict (0 when it has none: a value is missing)."""
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(v), sql.Literal(p)) for v, p in WEIGHTS[field].items()
    )
    return sql.SQL("CASE {} {} ELSE 0 END").format(sql.Identifier(field), cases)


_NICKNAMES = sql.SQL(
    "EXISTS (SELECT FROM first_name_forms x JOIN first_name_forms y USING (formal) WHERE x.name = af AND y.name = bf)"
)

# Each field's verdict on the pair, from the normalized values `a*` (the row) and `b*` (the candidate).
_VERDICTS = sql.SQL(
    """
    CASE WHEN af IS NULL OR bf IS NULL THEN NULL WHEN af = bf THEN 'same'
         WHEN (length(af) = 1 AND left(bf, 1) = af) OR (length(bf) = 1 AND left(af, 1) = bf) THEN 'initial'
         WHEN {nicknames} THEN 'nickname'
         WHEN least(length(af), length(bf)) >= 4 AND levenshtein(af, bf) <= 1 THEN 'typo'
         ELSE 'different' END AS first_name,
    CASE WHEN al IS NULL OR bl IS NULL THEN NULL WHEN al = bl THEN 'same'
         WHEN levenshtein(al, bl) <= CASE WHEN least(length(al), length(bl)) >= 8 THEN 2 ELSE 1 END THEN 'typo'
         WHEN als = bls THEN 'sounds alike'
         ELSE 'different' END AS last_name,
    CASE WHEN ac IS NULL OR bc IS NULL THEN NULL WHEN ac = bc THEN 'same'
         WHEN similarity(ac, bc) >= 0.5 THEN 'similar' ELSE 'different' END AS company,
    CASE WHEN ae IS NOT NULL AND ae = be AND ae <> ALL ({roles})
              -- Made of either name (john.smith, jsmith, johns): namesakes share it too.
              THEN CASE WHEN strpos(ae, replace(COALESCE(al, bl, '-'), ' ', '')) > 0
                          OR strpos(ae, replace(COALESCE(bl, al, '-'), ' ', '')) > 0
                          OR (length(COALESCE(af, bf, '')) >= 3 AND strpos(ae, COALESCE(af, bf)) > 0)
                        THEN 'same name-based local part' ELSE 'same local part' END
         WHEN ad = bd AND ad <> ALL ({free}) THEN 'same domain' END AS email,
    CASE WHEN ap IS NULL OR bp IS NULL THEN NULL WHEN ap = bp THEN 'same' ELSE 'different' END AS phone,
    CASE WHEN ay IS NULL OR by_ IS NULL THEN NULL WHEN ay = by_ THEN 'same' ELSE 'different' END AS city
    """
).format(nicknames=_NICKNAMES, roles=sql.Literal(list(ROLE_LOCAL_PARTS)), free=sql.Literal(list(FREE_MAIL_DOMAINS)))


# Each pair side's values as the verdicts compare them, of a lead or staged row `t`: read as `a<name>` for the
# row, `b<name>` for its candidate (`by_` for the city: BY is a keyword).
SIDE_VALUES = {
    "f": "lead_fuzzy_text(t.first_name)",
    "l": "lead_fuzzy_text(t.last_name)",
    "ls": "lead_name_sound(t.last_name)",
    "c": "lead_company_key(t.company_name)",
    "e": "lead_email_local(t.email_key)",
    "d": "split_part(t.email_key, '@', 2)",
    "p": "lead_phone_digits(t.phone_e164, t.phone)",
    "y": "lead_fuzzy_text(t.city)",
}


def _sides(table: str, source: sql.Composable, key: str, ids: sql.Composable) -> sql.Composed:
    """One side of the pairs, each value normalized once however many pairs it is in (the candidates of
    20,000 rows at 200,000 leads: 562,527 pairs, normalized per pair 18.7 s)."""
    values = sql.SQL(", ").join(sql.SQL(v + " AS {}").format(sql.Identifier(n)) for n, v in SIDE_VALUES.items())
    return sql.SQL(
        "CREATE TEMPORARY TABLE {table} ON COMMIT DROP AS SELECT t.{key} AS id, {values} FROM {source} t "
        "WHERE t.{key} IN ({ids})"
    ).format(table=sql.Identifier(table), values=values, source=source, key=sql.Identifier(key), ids=ids)


def _pair_values() -> sql.Composed:
    """Both sides' values of a pair: the row's (`a`), the candidate's, a lead (`l`) or an earlier row (`e`)."""
    row = (sql.SQL("a.{} AS {}").format(sql.Identifier(n), sql.Identifier(f"a{n}")) for n in SIDE_VALUES)
    candidate = (
        sql.SQL("COALESCE(l.{n}, e.{n}) AS {alias}").format(
            n=sql.Identifier(n), alias=sql.Identifier("by_" if n == "y" else f"b{n}")
        )
        for n in SIDE_VALUES
    )
    return sql.SQL(", ").join([*row, *candidate])


def _best_without(field: str) -> int:
    """The most points a pair can have when `field`'s verdict is `different`."""
    others = sum(max(0, *verdicts.values()) for f, verdicts in WEIGHTS.items() if f != field)
    return others + WEIGHTS[field]["different"]


def create_scoring_tables(cur: psycopg.Cursor) -> None:
    """`candidates` (pairs that share a blocking key) and `scored` (each row's best candidate, if any)."""
    cur.execute(
        "CREATE TEMPORARY TABLE candidates (source_row integer NOT NULL, lead_id bigint, candidate_row integer)"
        " ON COMMIT DROP"
    )
    cur.execute(
        """
        CREATE TEMPORARY TABLE scored (
            source_row integer PRIMARY KEY, lead_id bigint, candidate_row integer,
            score real NOT NULL, band text NOT NULL, reasons jsonb NOT NULL
        ) ON COMMIT DROP
        """
    )


def score_rows(cur: psycopg.Cursor, staging: sql.Identifier, scoring: DuplicateScoring) -> int:
    """Score the staged rows no key matched against live leads and earlier rows; returns the rows scored above
    `review_at` (in `scored`)."""
    create_scoring_tables(cur)
    unmatched = sql.SQL("s.match_id IS NULL")
    for block in BLOCKS:
        column = sql.Identifier("s", block.column)
        # Per distinct key, one index probe for at most max_block + 1 leads: a key with more is too common to
        # tell people apart, and the LATERAL keeps the planner from a join over every lead's expression.
        cur.execute(
            sql.SQL(
                """
                WITH keys AS (
                    SELECT DISTINCT {column} AS value FROM {staging} s WHERE {unmatched} AND {column} IS NOT NULL
                ), found AS (
                    SELECT k.value, probe.ids FROM keys k
                    CROSS JOIN LATERAL (
                        SELECT array_agg(id) AS ids FROM (
                            SELECT leads.id FROM leads WHERE {expression} = k.value AND {live} LIMIT %(limit)s
                        ) x
                    ) probe
                    WHERE cardinality(probe.ids) < %(limit)s
                )
                INSERT INTO candidates (source_row, lead_id)
                SELECT s.source_row, unnest(found.ids) FROM {staging} s
                JOIN found ON found.value = {column}
                WHERE {unmatched}
                """
            ).format(column=column, staging=staging, unmatched=unmatched, expression=block.of("leads"), live=LIVE),
            {"limit": scoring.max_block + 1},
        )
        # The file's other rows: an earlier row sharing the key is the candidate.
        cur.execute(
            sql.SQL(
                """
                WITH small AS (
                    SELECT {column} AS value FROM {staging} s WHERE {unmatched} AND {column} IS NOT NULL
                    GROUP BY {column} HAVING count(*) BETWEEN 2 AND %(max)s
                )
                INSERT INTO candidates (source_row, candidate_row)
                SELECT s.source_row, e.source_row FROM {staging} s
                JOIN small ON small.value = {column}
                JOIN {staging} e ON e.{name} = small.value AND e.source_row < s.source_row AND e.match_id IS NULL
                WHERE {unmatched}
                """
            ).format(column=column, staging=staging, unmatched=unmatched, name=sql.Identifier(block.column)),
            {"max": scoring.max_block},
        )
    cur.execute("CREATE TEMPORARY TABLE pairs ON COMMIT DROP AS SELECT DISTINCT * FROM candidates")
    cur.execute(
        _sides(
            "row_sides",
            staging,
            "source_row",
            sql.SQL(
                "SELECT source_row FROM pairs UNION SELECT candidate_row FROM pairs WHERE candidate_row IS NOT NULL"
            ),
        )
    )
    cur.execute(_sides("lead_sides", sql.Identifier("leads"), "id", sql.SQL("SELECT lead_id FROM pairs")))
    for table in ("pairs", "row_sides", "lead_sides"):
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    # A surname that differs caps the score below review_at (at the default weights 0.45): such pairs, most
    # of a block of colleagues sharing a first name, are dropped before their verdicts.
    surnames_agree = (
        sql.SQL("(al IS NULL OR bl IS NULL OR al = bl OR als = bls OR levenshtein(al, bl) <= 2)")
        if _best_without("last_name") < scoring.review_at * 100
        else sql.SQL("true")
    )
    points = sql.SQL(" + ").join(_weighted(f) for f in WEIGHTS)
    reasons = sql.SQL(", ").join(sql.SQL("{}, {}").format(sql.Literal(f), sql.Identifier(f)) for f in WEIGHTS)
    cur.execute(
        sql.SQL(
            """
            WITH normalized AS (
                SELECT p.source_row, p.lead_id, p.candidate_row, {values}
                FROM pairs p
                JOIN row_sides a ON a.id = p.source_row
                LEFT JOIN lead_sides l ON l.id = p.lead_id
                LEFT JOIN row_sides e ON e.id = p.candidate_row
            ), compatible AS (
                SELECT * FROM normalized
                WHERE {surnames_agree}
            ), judged AS (
                SELECT source_row, lead_id, candidate_row, {verdicts} FROM compatible
            ), weighed AS (
                SELECT *, greatest(0, least(100, {points})) / 100.0 AS score FROM judged
            )
            INSERT INTO scored (source_row, lead_id, candidate_row, score, band, reasons)
            SELECT DISTINCT ON (source_row) source_row, lead_id, candidate_row, score,
                   CASE WHEN score >= %(flag_at)s THEN {flagged} ELSE {review} END,
                   jsonb_strip_nulls(jsonb_build_object({reasons}))
            FROM weighed WHERE score >= %(review_at)s
            -- The best candidate; between equals, a live lead before a row of the file, then the oldest.
            ORDER BY source_row, score DESC, lead_id NULLS LAST, candidate_row
            """
        ).format(
            values=_pair_values(),
            surnames_agree=surnames_agree,
            verdicts=_VERDICTS,
            points=points,
            flagged=sql.Literal(FLAGGED),
            review=sql.Literal(REVIEW),
            reasons=reasons,
        ),
        {"flag_at": scoring.flag_at, "review_at": scoring.review_at},
    )
    return cur.rowcount


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
