"""Possible-duplicate scoring beside the load, on a connection of its own: `lead_comparison` brought up to date
and read while the load stages and matches the file, the rows scored while it writes.

Scoring only reads `lead_comparison` and hands the load a frame; the load's transaction alone writes. Measured
at 1M leads for 100,000 rows on 2 cores (`bench/possible_duplicates.py`), the import with scoring against the
same import without: reading the leads once the file was staged, 1.83x in two scans, 1.56x in one (the load's
writes then waited for the reading); reading them from the start, 1.21x to 1.48x in four runs.
"""

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor

import polars as pl

from import_pipeline.database import LeadsDatabase, wait_for_other_imports
from import_pipeline.lead_comparison import LeadValues, read_lead_values, refresh_lead_comparison
from import_pipeline.possible_duplicates import DuplicateScoring
from import_pipeline.scoring import best_candidates, find_candidates


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
    _leads: "Future[LeadValues] | None" = None
    _scored: "Future[Scored] | None" = None

    def start_comparing(self) -> None:
        """Bring `lead_comparison` up to date with the leads, then read it, beside the staging and matching (the
        read needs nothing of the file: started after the staging, it was still going while the load wrote)."""
        self._compared = self.worker.submit(compare_leads_now, self.leads_db)
        self._leads = self.worker.submit(self._on_own_connection, read_lead_values)

    def compared(self) -> int:
        """Wait for `start_comparing`'s first task; the leads it compared again. Before the load takes the imports'
        lock, which the comparison takes too: the other way round, each would wait for the other."""
        assert self._compared is not None, "start_comparing first"
        return self._compared.result()

    def start_scoring(self, rows: pl.DataFrame) -> None:
        """Score `rows` (`staged_values`) against the leads sharing their keys, beside the load's writes."""
        assert self._leads is not None, "start_comparing first"
        leads, self._leads = self._leads, None  # the leads' values, freed once their candidates are found
        self._scored = self.worker.submit(self._score, leads, rows)

    def _on_own_connection(self, task, *args):
        with self.leads_db.connect() as conn, conn.cursor() as cur:
            return task(cur, *args)

    def _score(self, leads: "Future[LeadValues]", rows: pl.DataFrame) -> Scored:
        started = time.perf_counter()
        candidates = find_candidates(rows, leads.result())
        del leads
        found = best_candidates(candidates, self.scoring)
        return Scored(found, time.perf_counter() - started)

    def scored(self) -> Scored:
        """Wait for `start_scoring`'s task; what it found."""
        assert self._scored is not None, "start_scoring first"
        return self._scored.result()
