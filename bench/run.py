"""Benchmark of the issue's targets T1-T4, each against a baseline measured in the same run.

    python bench/run.py --rows 1000000 --rows 10000000

T1/T2, for each size: generate an existing-leads file (seed 1, at most --existing-rows leads) and import
it; generate the workload (seed 2, 2% in-file duplicates, 3% invalid, 20% already in the database);
time (a) a bare COPY of the workload into an unindexed UNLOGGED table on the same server and (b)
`import-pipeline import WORKLOAD` from process start to exit, sampling its peak RSS.
T3: a 1,000-row file dropped into the landing folder of a running `import-pipeline dev`, to commit.
T4: landing-sensor ticks over a folder of 10,000 files, half of them imported before.
Ratios, not absolute times, are comparable across runs. Writes bench/out/results.json and results.md.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project's packages, tests' helpers included, from a clean clone
TARGETS = {"ratio_import_to_copy": 3.0, "peak_rss_mb_1m": 400, "peak_rss_mb_10m": 500, "drop_to_commit_s": 15.0,
           "slowest_tick_s": 2.0}
COUNTS = {"invalid": "rows_rejected", "duplicates_in_file": "duplicates_in_file",
          "duplicates_existing": "duplicates_existing", "inserted": "inserted"}


def generate(path: Path, rows: int, seed: int, *extra: str) -> dict:
    """Run the generator; return its predicted counts."""
    done = subprocess.run(
        [sys.executable, str(HERE / "generate.py"), str(path), "--rows", str(rows), "--seed", str(seed), *extra],
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


def bare_copy(url: str, path: Path) -> float:
    """Seconds to COPY the file into an unindexed UNLOGGED table of text columns."""
    with path.open() as f:
        columns = f.readline().count(",") + 1
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute(f"CREATE UNLOGGED TABLE bench_copy ({', '.join(f'c{i} text' for i in range(columns))})")
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY bench_copy FROM STDIN (FORMAT csv, HEADER true)") as copy, path.open("rb") as f:
            while block := f.read(1 << 20):
                copy.write(block)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
    return elapsed


def timed_import(path: Path) -> tuple[float, int, dict]:
    """(seconds from process start to exit, peak RSS of the process tree in bytes, the import's JSON)."""
    log = path.with_suffix(".import.log")
    started = time.perf_counter()
    with log.open("w") as stderr:
        process = subprocess.Popen(["import-pipeline", "import", str(path), "--json"], stdout=subprocess.PIPE, stderr=stderr, text=True)
    peak, tree = 0, psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [tree, *tree.children(recursive=True)]))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    output = process.stdout.read()
    if not output:
        raise RuntimeError(f"the import of {path.name} printed nothing; its log ends:\n" + log.read_text()[-3000:])
    return elapsed, peak, json.loads(output)


def bench(rows: int, existing_rows: int, work: Path) -> dict:
    existing, workload = work / f"existing_{existing_rows}.csv", work / f"workload_{rows}.csv"
    generate(existing, existing_rows, 1)
    expected = generate(workload, rows, 2, "--dup-rate", "0.02", "--invalid-rate", "0.03",
                        "--overlap-with", str(existing), "--overlap-rate", "0.2")
    fill_s, _, filled = timed_import(existing)
    assert filled["status"] == "success", filled["error"]
    copy_s = bare_copy(os.environ["IMPORT_PIPELINE_DATABASE_URL"], workload)
    import_s, peak, result = timed_import(workload)
    assert result["status"] == "success", result["error"]
    return {
        "rows": rows,
        "existing_leads": existing_rows,
        "fill_existing_s": round(fill_s, 2),
        "copy_s": round(copy_s, 2),
        "copy_rows_per_s": round(rows / copy_s),
        "import_s": round(import_s, 2),
        "import_rows_per_s": round(rows / import_s),
        "ratio_import_to_copy": round(import_s / copy_s, 2),
        "peak_rss_mb": round(peak / 2**20),
        "step_seconds": result.get("step_seconds"),
        "load_seconds": result.get("load_seconds"),
        "counts_match": all(result[v] == expected[k] for k, v in COUNTS.items()),
        "counts": {v: result[v] for v in COUNTS.values()},
    }


def _verdict(value: float, target: float) -> str:
    return "met" if value <= target else "**missed**"


def markdown(results: list[dict], machine: str, latency: dict | None, sensor: dict | None) -> str:
    lines = [
        f"Measured {datetime.date.today()} on {machine}.",
        "",
        "| target | measured | goal | |",
        "| --- | ---: | ---: | --- |",
    ]
    for r in results:
        memory_goal = TARGETS["peak_rss_mb_10m"] if r["rows"] > 1_000_000 else TARGETS["peak_rss_mb_1m"]
        lines.append(f"| T1 import / bare COPY, {r['rows']:,} rows | {r['ratio_import_to_copy']}x | "
                     f"≤ {TARGETS['ratio_import_to_copy']}x | {_verdict(r['ratio_import_to_copy'], TARGETS['ratio_import_to_copy'])} |")
        lines.append(f"| T2 peak RSS, {r['rows']:,} rows | {r['peak_rss_mb']} MB | ≤ {memory_goal} MB | "
                     f"{_verdict(r['peak_rss_mb'], memory_goal)} |")
    if latency:
        lines.append(f"| T3 1,000-row file, drop to commit | {latency['drop_to_commit_s']} s | ≤ {TARGETS['drop_to_commit_s']} s | "
                     f"{_verdict(latency['drop_to_commit_s'], TARGETS['drop_to_commit_s'])} |")
    if sensor:
        lines.append(f"| T4 slowest sensor tick, {sensor['files']:,} files | {sensor['slowest_tick_s']} s | "
                     f"≤ {TARGETS['slowest_tick_s']} s | {_verdict(sensor['slowest_tick_s'], TARGETS['slowest_tick_s'])} |")
        small = next(v for k, v in sensor.items() if k.startswith("largest_cursor_bytes_"))
        lines.append(f"| T4 largest cursor, {sensor['files']:,} vs {sensor['files'] // 10:,} files | "
                     f"{sensor['largest_cursor_bytes']:,} vs {small:,} bytes | bounded | "
                     f"{'met' if sensor['largest_cursor_bytes'] <= 2 * max(small, 1) else '**missed**'} |")
    lines += [
        "",
        "| rows | existing leads | bare COPY s | COPY rows/s | import s | import rows/s | import / COPY | peak RSS MB | counts |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {r['rows']:,} | {r['existing_leads']:,} | {r['copy_s']} | {r['copy_rows_per_s']:,} | {r['import_s']} | "
        f"{r['import_rows_per_s']:,} | {r['ratio_import_to_copy']}x | {r['peak_rss_mb']} | {'OK' if r['counts_match'] else 'MISMATCH'} |"
        for r in results
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="workload size; repeat for several")
    parser.add_argument("--existing-rows", type=int, default=1_000_000, help="at most this many leads already in the table")
    parser.add_argument("--skip-latency", action="store_true", help="skip T3 and T4")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="import-bench-"))
    if not os.environ.get("IMPORT_PIPELINE_DATABASE_URL"):
        # Hold the embedded server for the whole run, so no import pays its start or stop.
        os.environ["IMPORT_PIPELINE_HOME"] = str(work / "home")
        # A first start creates and tunes the server (bulk_load_settings); its buffers apply from the second.
        subprocess.run([sys.executable, "-c", "from import_pipeline.cli import bootstrap; bootstrap()"], check=True)
        from import_pipeline.cli import bootstrap

        bootstrap()
    machine = f"{platform.machine()}, {psutil.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB, Python {platform.python_version()}"
    results = []
    for rows in args.rows or []:
        with psycopg.connect(os.environ["IMPORT_PIPELINE_DATABASE_URL"], autocommit=True) as conn:
            conn.execute("TRUNCATE leads, lead_history, rejected_rows, imports CASCADE")
        results.append(bench(rows, min(rows, args.existing_rows), work))
        print(json.dumps(results[-1]), file=sys.stderr)
    latency = sensor = None
    if not args.skip_latency:
        from latency import drop_to_commit  # bench/ is the script's folder
        from sensor_scale import sensor_scale
        from import_pipeline.config import home_dir, landing_dir

        sample = work / "latency_1000.csv"
        generate(sample, 1000, 3)
        latency = drop_to_commit(sample, landing_dir(home_dir()), os.environ["IMPORT_PIPELINE_DATABASE_URL"], work / "dev.log")
        print(json.dumps(latency), file=sys.stderr)
        sensor = sensor_scale(work)
        print(json.dumps(sensor), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"machine": machine, "targets": TARGETS, "results": results, "latency": latency, "sensor": sensor}, indent=2)
    )
    table = markdown(results, machine, latency, sensor)
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
