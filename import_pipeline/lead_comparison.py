"""`lead_comparison`: each live lead's values as possible-duplicate scoring compares them, kept current.

A row records the lead's row version (`xmin`) it was computed from; a scoring import first brings the
table up to date with the leads (new, changed or gone since, whoever wrote them: one join of the two tables,
about 0.5 s at 1M leads), and after its own writes it records the leads it wrote. Scoring then reads this
narrow table a page at a time (`lead_pages`) instead of normalizing `leads`' values in SQL (measured at 1M
leads: 15.5 s for the candidates of 100,000 rows), and `leads` carries no blocking index for the application's
writes to upkeep.
"""

from collections.abc import Iterator

import polars as pl
import psycopg
from psycopg import sql

from import_pipeline.comparison import BLOCKS, INPUT_COLUMNS, SIDES, comparison_values
from import_pipeline.schema import LIVE
from import_pipeline.staging import copy_frames, read_frame

# Leads per round trip: bounds the memory of a first fill (1M leads) and of each page the scoring reads.
CHUNK = 100_000
COLUMNS = ("lead_id", "version", *SIDES, *BLOCKS)


def _in_pages(cur: psycopg.Cursor, select: sql.Composable, schema: dict) -> Iterator[pl.DataFrame]:
    """The rows of `select` (a query whose `lead_id` comes first and may be filtered on), CHUNK at a time in
    lead order: keyset pages, each one indexed range of the primary key."""
    after = 0
    while True:
        page = read_frame(
            cur,
            sql.SQL("SELECT * FROM ({}) x WHERE lead_id > {} ORDER BY lead_id LIMIT {}").format(
                select, sql.Literal(after), sql.Literal(CHUNK)
            ),
            schema,
        )
        if page.is_empty():
            return
        yield page
        after = page.get_column("lead_id").max()  # type: ignore[assignment]


def _recompute(cur: psycopg.Cursor) -> int:
    """Write the values of the leads in `comparison_stale.id`, chunk by chunk; returns how many."""
    done = 0
    select = sql.SQL(
        "SELECT l.id AS lead_id, l.xmin::text AS version, {} FROM leads l WHERE l.id IN (SELECT id FROM comparison_stale)"
    ).format(sql.SQL(", ").join(sql.Identifier("l", c) for c in INPUT_COLUMNS))
    schema = {"lead_id": pl.Int64, "version": pl.String, **dict.fromkeys(INPUT_COLUMNS, pl.String)}
    for leads in _in_pages(cur, select, schema):
        values = comparison_values(cur, leads)
        done += copy_frames(cur, sql.Identifier("lead_comparison"), COLUMNS, [values], values.height)
    return done


def _apply(cur: psycopg.Cursor, stale: sql.Composable) -> int:
    """Replace the rows of `stale` (id: a live lead to compute, kept: a row to drop); returns leads computed."""
    cur.execute("DROP TABLE IF EXISTS comparison_stale")
    cur.execute(sql.SQL("CREATE TEMPORARY TABLE comparison_stale ON COMMIT DROP AS {}").format(stale))
    if not cur.rowcount:
        return 0  # nothing to write: no row lock taken, no dead row left
    cur.execute("DELETE FROM lead_comparison WHERE lead_id IN (SELECT kept FROM comparison_stale)")
    cur.execute("DELETE FROM comparison_stale WHERE id IS NULL")
    cur.execute("ANALYZE comparison_stale")
    return _recompute(cur)


def refresh_lead_comparison(cur: psycopg.Cursor) -> int:
    """Bring `lead_comparison` up to date with `leads` (in the imports' lock); returns the leads recomputed."""
    return _apply(
        cur,
        sql.SQL(
            """
            SELECT l.id, c.lead_id AS kept
            FROM (SELECT id, xmin AS version FROM leads WHERE {live}) l
            FULL JOIN lead_comparison c ON c.lead_id = l.id
            WHERE l.id IS NULL OR c.lead_id IS NULL OR c.version <> l.version
            """
        ).format(live=LIVE),
    )


def record_written(cur: psycopg.Cursor, import_id: int, rows: pl.DataFrame) -> int:
    """After an import's writes: its new leads take the values its rows had (`rows`: source_row, SIDES,
    BLOCKS), the other leads it wrote (`outcomes`) are recomputed; returns the leads recorded. A lead left out
    is not wrong, only late: the next refresh computes it."""
    inserted = read_frame(
        cur,
        sql.SQL(
            "SELECT id AS lead_id, xmin::text AS version, source_row FROM leads WHERE created_by_import = {}"
        ).format(sql.Literal(import_id)),
        {"lead_id": pl.Int64, "version": pl.String, "source_row": pl.Int64},
    )
    # A new lead is the row it was inserted from: its values are that row's (measured at 100,000 new leads:
    # 0.4 s, against 1.8 s to read them back and compute them again).
    known = inserted.join(rows, on="source_row")
    done = copy_frames(cur, sql.Identifier("lead_comparison"), COLUMNS, [known], known.height)
    return done + _apply(
        cur,
        sql.SQL(
            """
            SELECT CASE WHEN {live} THEN l.id END AS id, l.id AS kept FROM leads l
            WHERE l.id IN (SELECT lead_id FROM outcomes)
              AND NOT EXISTS (SELECT FROM lead_comparison c WHERE c.lead_id = l.id AND c.version = l.xmin)
            """
        ).format(live=LIVE),
    )


def lead_pages(cur: psycopg.Cursor) -> Iterator[pl.DataFrame]:
    """`lead_comparison`'s lead_id, SIDES and BLOCKS, CHUNK leads at a time in lead order."""
    columns = ("lead_id", *SIDES, *BLOCKS)
    select = sql.SQL("SELECT {} FROM lead_comparison").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    return _in_pages(cur, select, {"lead_id": pl.Int64, **dict.fromkeys(columns[1:], pl.String)})
