"""Possible-duplicate scoring: precision and recall per band on labelled data, and its cost at scale.

    python bench/possible_duplicates.py [--existing 20000 --incoming 5000 --seed 1]
                                        [--cost-existing 1000000 --cost-rows 100000] [--out bench/out]

Accuracy: in a state folder of its own (its own embedded server), `duplicate_pairs.py` writes EXISTING leads
and INCOMING labelled rows (true duplicates under a new email, hard non-duplicates, new people); the existing
file is imported, then the incoming one with `possible_duplicates: enabled` and the default bands; the queue
(`possible_duplicates` joined to each candidate's email) is judged against the labels by
`duplicate_pairs.evaluate`. Targets: flagged precision >= 0.95, flagged + review recall >= 0.90, review
<= 5% of incoming rows.

Cost (--cost-existing > 0): in another state folder, COST_EXISTING leads of the same generator are imported,
then COST_ROWS incoming rows (seed + 1) with scoring off, from process start to exit with the peak RSS of
its process tree; that import is reverted; `lead_comparison` is filled (timed apart: the first scoring
import pays it once); the same file is imported again with scoring on. Target: on / off <= 1.5x.
Writes possible_duplicates.json, possible_duplicates.md and judged.csv (each queued pair beside its label) to --out;
the state folders are removed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project's package, from a clean clone
from duplicate_pairs import evaluate, existing_leads, incoming_rows  # noqa: E402  (bench/ is the script's folder)
from run import timed_process  # noqa: E402

from import_pipeline.concurrent_scoring import compare_leads_now  # noqa: E402
from import_pipeline.database import LeadsDatabase  # noqa: E402
from import_pipeline.load import SCORED_BESIDE  # noqa: E402
from import_pipeline.possible_duplicates import ensure_scoring  # noqa: E402

TARGETS = {"flagged_precision": 0.95, "recall": 0.90, "review_share": 0.05, "cost_ratio": 1.5}
SCORING_ON = "ops:\n  dedupe:\n    config:\n      possible_duplicates:\n        enabled: true\n"


class StateFolder:
    """`import-pipeline` commands against an embedded server of their own."""

    def __init__(self, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if k not in ("IMPORT_PIPELINE_DATABASE_URL", "DAGSTER_HOME")}
        self.env["IMPORT_PIPELINE_HOME"] = str(home)
        self.home = home

    def cli(self, *args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "import_pipeline", *args, "--json"], env=self.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(
                f"import-pipeline {' '.join(args)} failed ({done.returncode}): {done.stdout} {done.stderr}"
            )
        return json.loads(done.stdout)

    def timed_import(self, path: Path, *args: str) -> tuple[float, int, dict]:
        """(seconds from process start to exit, peak RSS of its process tree in bytes, the import's JSON)."""
        os.environ["IMPORT_PIPELINE_HOME"] = self.env["IMPORT_PIPELINE_HOME"]  # timed_process inherits it
        command = [sys.executable, "-m", "import_pipeline", "import", str(path), *args, "--json"]
        elapsed, peak, output = timed_process(command, path.with_suffix(".log"))
        result = json.loads(output)
        if result["status"] != "success":
            raise SystemExit(f"the import of {path.name} failed: {result.get('error')}")
        return elapsed, peak, result

    def url(self) -> str:
        return subprocess.run(
            [sys.executable, "-m", "import_pipeline", "dsn"], env=self.env, capture_output=True, text=True, check=True
        ).stdout.strip()

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "import_pipeline", "stop", "--force"], env=self.env, capture_output=True)


def queue_of(url: str, import_id: int) -> pl.DataFrame:
    """The import's queued rows as `evaluate` reads predictions (source_row, candidate_email, band), with
    score and reasons."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT p.source_row, c.email, p.band, p.score, p.reasons::text FROM possible_duplicates p JOIN leads c ON c.id = p.candidate_id
            WHERE p.import_id = %s
            """,
            (import_id,),
        ).fetchall()
    return pl.DataFrame(rows, schema=["source_row", "candidate_email", "band", "score", "reasons"], orient="row")


def last_import_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT max(id) FROM imports").fetchone()[0]


def accuracy(work: Path, out: Path, existing: int, incoming: int, seed: int) -> dict:
    """Import labelled data with scoring on; precision and recall of the queue (each pair in out/judged.csv)."""
    leads = existing_leads(existing, seed)
    rows, labels = incoming_rows(leads, incoming, seed)
    leads.write_csv(work / "existing.csv")
    rows.write_csv(work / "incoming.csv")
    (work / "scoring.yaml").write_text(SCORING_ON)
    state = StateFolder(work / "home")
    try:
        state.cli("import", str(work / "existing.csv"))
        elapsed, _, result = state.timed_import(work / "incoming.csv", "--config", str(work / "scoring.yaml"))
        url = state.url()
        queue = queue_of(url, last_import_id(url))
        report = evaluate(labels, queue)
        # Each queued pair beside its label, for tuning WEIGHTS and the bands.
        queue.join(labels, on="source_row", how="left").write_csv(out / "judged.csv")
    finally:
        state.stop()
    return {
        "existing": existing,
        "incoming": incoming,
        "seed": seed,
        "judged": str(out / "judged.csv"),
        "import_s": round(elapsed, 2),
        "score_s": result["load_seconds"].get(SCORED_BESIDE),
        "counts": {k: result[k] for k in ("inserted", "possible_duplicates", "to_review", "auto_merged")},
        **report,
    }


def cost(work: Path, existing: int, rows: int, seed: int) -> dict:
    """The same import with scoring off, then (reverted, lead_comparison filled) on, into `existing` live leads."""
    leads = existing_leads(existing, seed)
    incoming, labels = incoming_rows(leads, rows, seed + 1)
    leads.write_csv(work / "cost_existing.csv")
    incoming.write_csv(work / "cost_incoming.csv")
    del leads
    (work / "scoring.yaml").write_text(SCORING_ON)
    state = StateFolder(work / "cost_home")
    try:
        state.cli("import", str(work / "cost_existing.csv"))
        off_s, off_rss, off = state.timed_import(work / "cost_incoming.csv")
        state.cli("revert", off["partition_key"])
        started = time.perf_counter()
        with psycopg.connect(state.url(), autocommit=True) as conn:
            reason = ensure_scoring(conn)
            if reason:
                raise SystemExit(reason)
        # As the first scoring import does beside its staging.
        filled = compare_leads_now(LeadsDatabase(url=state.url()))
        fill_s = time.perf_counter() - started
        on_s, on_rss, on = state.timed_import(work / "cost_incoming.csv", "--config", str(work / "scoring.yaml"))
        url = state.url()
        report = evaluate(labels, queue_of(url, last_import_id(url)))
    finally:
        state.stop()
    return {
        "existing": existing,
        "rows": rows,
        "off_s": round(off_s, 2),
        "on_s": round(on_s, 2),
        "ratio": round(on_s / off_s, 2),
        "fill_s": round(fill_s, 1),
        "leads_compared": filled,
        "off_peak_rss_mb": round(off_rss / 2**20),
        "on_peak_rss_mb": round(on_rss / 2**20),
        "off_load_seconds": off["load_seconds"],
        "on_load_seconds": on["load_seconds"],
        "on_counts": {k: on[k] for k in ("inserted", "possible_duplicates", "to_review")},
        "accuracy": {k: v for k, v in report.items() if k != "by_kind"},
    }


def markdown(acc: dict, spent: dict | None) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    flagged, both = acc["flagged"], acc["flagged_or_review"]
    lines = [
        f"Accuracy: {acc['existing']:,} existing leads, {acc['incoming']:,} incoming rows "
        f"({acc['true_duplicates']:,} true duplicates), seed {acc['seed']}",
        "",
        "| band | predicted | correct | precision | recall | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        f"| flagged | {flagged['predicted']:,} | {flagged['correct']:,} | {flagged['precision']} | {flagged['recall']} "
        f"| precision >= {TARGETS['flagged_precision']}: {verdict((flagged['precision'] or 0) >= 0.95)} |",
        f"| review | {acc['review']['predicted']:,} | {acc['review']['correct']:,} | {acc['review']['precision']} "
        f"| {acc['review']['recall']} | share {acc['review_share']:.1%} <= 5%: "
        f"{verdict(acc['review_share'] <= TARGETS['review_share'])} |",
        f"| both | {both['predicted']:,} | {both['correct']:,} | {both['precision']} | {both['recall']} "
        f"| recall >= {TARGETS['recall']}: {verdict((both['recall'] or 0) >= TARGETS['recall'])} |",
        "",
        f"Import with scoring on: {acc['import_s']} s (scoring {acc['score_s']} s beside the load).",
    ]
    if spent:
        lines += [
            "",
            f"Cost: {spent['rows']:,} rows into {spent['existing']:,} live leads",
            "",
            "| scoring | import s | peak RSS MB |",
            "| --- | ---: | ---: |",
            f"| off | {spent['off_s']} | {spent['off_peak_rss_mb']} |",
            f"| on | {spent['on_s']} | {spent['on_peak_rss_mb']} |",
            "",
            f"on / off = {spent['ratio']}x (target <= {TARGETS['cost_ratio']}x: "
            f"{verdict(spent['ratio'] <= TARGETS['cost_ratio'])}); filling lead_comparison took "
            f"{spent['fill_s']} s, once. Accuracy of that import: flagged precision "
            f"{spent['accuracy']['flagged']['precision']}, recall {spent['accuracy']['flagged_or_review']['recall']}, "
            f"review share {spent['accuracy']['review_share']:.1%}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--existing", type=int, default=20_000)
    parser.add_argument("--incoming", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cost-existing", type=int, default=0, help="live leads for the cost run (0: no cost run)")
    parser.add_argument("--cost-rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="possible-duplicates-"))
    try:
        acc = accuracy(work, args.out, args.existing, args.incoming, args.seed)
        print(json.dumps({k: v for k, v in acc.items() if k != "by_kind"}), file=sys.stderr)
        spent = cost(work, args.cost_existing, args.cost_rows, args.seed) if args.cost_existing else None
    finally:
        # The state folders hold their servers' data, stopped by now: 2.5 to 3 GB a cost run (fourteen filled the disk).
        shutil.rmtree(work, ignore_errors=True)
    (args.out / "possible_duplicates.json").write_text(
        json.dumps({"targets": TARGETS, "accuracy": acc, "cost": spent}, indent=2)
    )
    table = markdown(acc, spent)
    (args.out / "possible_duplicates.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
