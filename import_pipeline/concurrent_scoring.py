"""Possible-duplicate scoring beside the load, on connections of its own: `lead_comparison` brought up to date
while the load stages the file, the rows scored while it writes.

Scoring only reads `lead_comparison` and hands the load a frame; the load's transaction alone writes. Measured
at 1M leads for 100,000 rows on 2 cores (`bench/possible_duplicates.py`): the import with scoring took 1.83x
the one without when the scoring ran after the matching, 1.56x beside the load; of the scoring's 3.8 s,
1.2 s are left once the load's writes are done.
"""

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor

import polars as pl

from import_pipeline.comparison import comparison_values
from import_pipeline.database import LeadsDatabase, wait_for_other_imports
from import_pipeline.lead_comparison import refresh_lead_comparison
from import_pipeline.possible_duplicates import DuplicateScoring
from import_pipeline.scoring import Candidates, best_candidates, find_candidates


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
    """What the scoring beside the load found (`best_candidates`), and how long it took there."""

    found: pl.DataFrame
    seconds: float


@dataclasses.dataclass
class ConcurrentScoring:
    """One load attempt's scoring, in one worker thread: its tasks run in the order they are started."""

    scoring: DuplicateScoring
    leads_db: LeadsDatabase
    worker: ThreadPoolExecutor
    _compared: "Future[int] | None" = None
    _rows: "Future[pl.DataFrame] | None" = None
    _candidates: "Future[Candidates] | None" = None
    _scored: "Future[Scored] | None" = None

    def start_comparing(self) -> None:
        """Bring `lead_comparison` up to date with the leads, beside the staging."""
        self._compared = self.worker.submit(compare_leads_now, self.leads_db)

    def compared(self) -> int:
        """Wait for `start_comparing`'s task; the leads it compared again. Before the load takes the imports' lock,
        which the comparison takes too: the other way round, each would wait for the other."""
        assert self._compared is not None, "start_comparing first"
        return self._compared.result()

    def start_finding(self, staged: pl.DataFrame) -> None:
        """Compute `staged`'s (`staged_rows`) comparison values, then find the live leads sharing a blocking key
        with them, beside the matching: two tasks, the load's writes need the values only."""
        rows = self._rows = self.worker.submit(self._on_own_connection, comparison_values, staged)
        self._candidates = self.worker.submit(lambda: self._on_own_connection(find_candidates, rows.result()))

    def rows(self) -> pl.DataFrame:
        """Wait for `start_finding`'s first task; the staged rows' comparison values (source_row, SIDES, BLOCKS)."""
        assert self._rows is not None, "start_finding first"
        return self._rows.result()

    def start_scoring(self, unmatched: pl.Series) -> None:
        """Score the `unmatched` rows against their candidates, beside the load's writes."""
        assert self._candidates is not None, "start_finding first"
        self._scored = self.worker.submit(self._score, self._candidates, unmatched)

    def _on_own_connection(self, task, *args):
        with self.leads_db.connect() as conn, conn.cursor() as cur:
            return task(cur, *args)

    def _score(self, candidates: "Future[Candidates]", unmatched: pl.Series) -> Scored:
        started = time.perf_counter()
        found = best_candidates(candidates.result(), unmatched, self.scoring)
        return Scored(found, time.perf_counter() - started)

    def scored(self) -> Scored:
        """Wait for `start_scoring`'s task; what it found."""
        assert self._scored is not None, "start_scoring first"
        return self._scored.result()
