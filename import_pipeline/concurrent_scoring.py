"""Possible-duplicate scoring beside the load, on a connection of its own: `lead_comparison` brought up to date
while the load stages the file, then the rows judged against it, a page of leads at a time, while the load
matches and writes.

Scoring only reads `lead_comparison` and hands the load a frame; the load's transaction alone writes. Measured
at 1M leads for 100,000 rows on 2 cores (`bench/possible_duplicates.py`), the import with scoring against the
same import without: reading the leads once the file was staged, 1.83x in two scans, 1.56x in one (the load's
writes then waited for the reading); reading them from the start, 1.21x to 1.48x in four runs, but holding every
lead's values (700 MB peak against 342 MB without scoring).
"""

import dataclasses
import time
from collections.abc import Iterable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

import polars as pl

from import_pipeline.database import LeadsDatabase, wait_for_other_imports
from import_pipeline.lead_comparison import lead_pages, refresh_lead_comparison
from import_pipeline.possible_duplicates import DuplicateScoring
from import_pipeline.scoring import LeadPairs, RowsToScore, row_values


def compare_leads_now(leads_db: LeadsDatabase) -> int:
    """`lead_comparison` brought up to date in a transaction of its own (the first time, every live lead: about
    10 s at 1M leads), then vacuumed; returns the leads compared again.

    Leads the application writes after it are compared by the next scoring import: looking again inside the
    load cost another 0.9 s at 1M leads (the same join of the two tables) for the seconds in between.
    """
    with leads_db.connect() as conn:
        conn.autocommit = True
        with conn.transaction(), conn.cursor() as cur:
            wait_for_other_imports(cur)
            refreshed = refresh_lead_comparison(cur)
        # Scans of rows just written set their hint bits as they go: the import right after a fill of 1M leads
        # scored in 13.2 s, the same import on the vacuumed table in 6.6 to 8.1 s. Only pages written since are
        # read; skipped, not waited for, while another session (autovacuum) holds the table. Not analyzed: its
        # queries go by primary key or read it whole, and ANALYZE was 0.36 s of the 0.41 s at 1M leads.
        conn.execute("VACUUM (SKIP_LOCKED) lead_comparison")
    return refreshed


@dataclasses.dataclass(frozen=True)
class Scored:
    """What the scoring beside the load found (`LeadPairs.best_candidates`), and how long it took there."""

    found: pl.DataFrame
    seconds: float


@dataclasses.dataclass
class ConcurrentScoring:
    """One load attempt's scoring, in one worker thread: its tasks run in the order they are started."""

    scoring: DuplicateScoring
    leads_db: LeadsDatabase
    worker: ThreadPoolExecutor
    _compared: "Future[int] | None" = None
    _values: "Future[pl.DataFrame] | None" = None
    _judged: "Future[tuple[LeadPairs, float]] | None" = None
    _scored: "Future[Scored] | None" = None
    # Read by the worker before each page of leads: narrowed by `score_unmatched` as soon as the match is known.
    _rows: RowsToScore | None = None
    _stopped: bool = False

    def start(self, rows: Iterable[pl.LazyFrame]) -> None:
        """Bring `lead_comparison` up to date with the leads, compute the values of the file's `rows` (`file_rows`,
        part by part) and judge them against the leads sharing their keys: beside the staging, the matching and the
        writes."""
        self._compared = self.worker.submit(compare_leads_now, self.leads_db)
        self._values = self.worker.submit(self._values_of, rows)
        self._judged = self.worker.submit(self._judge_leads)

    def compared(self) -> int:
        """Wait for the comparison of the leads; how many it compared again. Before the load takes the imports'
        lock, which the comparison takes too: the other way round, each would wait for the other."""
        assert self._compared is not None, "start first"
        return self._compared.result()

    def score_unmatched(self, source_rows: pl.Series) -> pl.DataFrame:
        """Score the rows of `source_rows` alone (those no key matched): against the leads, then each other. Returns
        their values (`row_values`)."""
        assert self._values is not None, "start first"
        values = self._values.result().filter(pl.col("source_row").is_in(source_rows.implode()))
        assert self._rows is not None
        self._rows = self._rows.only(source_rows)
        self._scored = self.worker.submit(self._best)
        return values

    def stop(self) -> None:
        """The attempt is over: the worker reads no further page."""
        self._stopped = True

    def _values_of(self, rows: Iterable[pl.LazyFrame]) -> pl.DataFrame:
        # Taken from the staging after the copy, the staged rows' values cost the load 0.44 s, and the judging beside
        # it started 1.4 s later. Part by part: the values of 100,000 rows at once took 75 MB while computed.
        with self.leads_db.connect() as conn, conn.cursor() as cur:
            values = pl.concat([row_values(cur, part.collect()) for part in rows])
        self._rows = RowsToScore.of(values)
        return values

    def _judge_leads(self) -> tuple[LeadPairs, float]:
        started = time.perf_counter()
        pairs = LeadPairs(self.scoring)
        with self.leads_db.connect() as conn, conn.cursor() as cur, ThreadPoolExecutor(1) as reader:
            # The next page is read while this one is judged: at 1M leads for 100,000 rows the load then waited 0.9 to
            # 1.2 s after its writes instead of 1.6 to 1.9 s, for about 30 MB more.
            pages = lead_pages(cur)
            coming = reader.submit(next, pages, None)
            while (page := coming.result()) is not None:
                if self._stopped:
                    raise CancelledError("the load attempt ended")
                coming = reader.submit(next, pages, None)
                assert self._rows is not None
                pairs.judge_page(self._rows, page)
        return pairs, time.perf_counter() - started

    def _best(self) -> Scored:
        assert self._judged is not None and self._rows is not None
        pairs, seconds = self._judged.result()
        started = time.perf_counter()
        found = pairs.best_candidates(self._rows)
        return Scored(found, seconds + time.perf_counter() - started)

    def scored(self) -> Scored:
        """Wait for `score_unmatched`'s task; what it found."""
        assert self._scored is not None, "score_unmatched first"
        return self._scored.result()
