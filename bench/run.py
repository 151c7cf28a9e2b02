"""Benchmark of the issue's targets T1-T4, each against a baseline measured in the same run.

    python bench/run.py --rows 1000000 --rows 10000000

T1/T2, for each size: generate an existing-leads file (seed 1, at most --existing-rows leads) and import
it; generate the workload (seed 2, 2% in-file duplicates, 3% invalid, 20% already in the database);
time, on the same server, (a) a bare COPY of the workload into an unindexed UNLOGGED table, (b) the
peer baseline `../shared/baselines/straightforward_import.py` in a database of its own, reset from the
existing leads first, and (c) `import-pipeline import WORKLOAD`, (b) and (c) from process start to exit
with their peak RSS; during (c) an application session writes to `leads` every 0.2 s (app_writes.py).
T3: a 1,000-row file dropped into the landing folder of a running `import-pipeline dev`, to commit.
T4: landing-sensor ticks over a folder of 10,000 files, half of them imported before.
T5 (--xlsx ROWS, repeatable): one XLSX sheet of ROWS leads and the same leads as CSV, each imported (workbook.py).
Ratios, not absolute times, are comparable across runs. Writes bench/out/results.json and results.md.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project's packages, tests' helpers included, from a clean clone
TARGETS = {
    "ratio_import_to_copy": 10.0,
    "ratio_import_to_copy_stretch": 5.0,
    "ratio_import_to_baseline": 1.0,
    "app_write_wait_s": 1.0,
    "sessions_dropped": 0,
    "peak_rss_mb_1m": 400,
    "peak_rss_mb_10m": 500,
    "drop_to_commit_s": 15.0,
    "slowest_tick_s": 2.0,
    "workbook_peak_rss_mb": 1024,
}
COUNTS = {
    "invalid": "rows_rejected",
    "duplicates_in_file": "duplicates_in_file",
    "duplicates_existing": "duplicates_existing",
    "inserted": "inserted",
}
BASELINE = HERE.parent.parent / "shared" / "baselines" / "straightforward_import.py"
BASELINE_DATABASE = "baseline"
STEPS = ("parse", "validate", "dedupe", "load")  # the import's steps in the order they run
BASELINE_COUNTS = {
    "invalid": "invalid",
    "duplicates_in_file": "in_file_duplicates",
    "duplicates_existing": "existing",
    "inserted": "inserted",
}


def generate(path: Path, rows: int, seed: int, *extra: str) -> dict:
    """Run the generator; return its predicted counts."""
    done = subprocess.run(
        [sys.executable, str(HERE / "generate.py"), str(path), "--rows", str(rows), "--seed", str(seed), *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


def stop_embedded(home: Path) -> None:
    """Stop the embedded server under `home`: `import-pipeline` commands leave it running for the next one."""
    try:
        from import_pipeline.embedded_server import stop_embedded_server
    except ImportError:
        return  # a version whose server stops by itself with the last process that uses it
    outcome = stop_embedded_server(home)
    if outcome.was_running and not outcome.stopped:
        print(f"the embedded server under {home} keeps running: {outcome.users or outcome.error}", file=sys.stderr)


def server_settings(url: str) -> dict:
    """The server's version and the settings that move the timings most, to tell a mistuned run at a glance."""
    names = ("server_version", "shared_buffers", "max_wal_size", "checkpoint_timeout")
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0] for name in names}


def checkpoint(url: str) -> None:
    """Write every dirty buffer out, so no timed step pays for the writes of the one before it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def bare_copy(url: str, path: Path) -> float:
    """Seconds to COPY the file into an unindexed UNLOGGED table of text columns."""
    with path.open() as f:
        columns = f.readline().count(",") + 1
    table = sql.Identifier("bench_copy")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(
            sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
                table, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(f"c{i}")) for i in range(columns))
            )
        )
        started = time.perf_counter()
        copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(table)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy, path.open("rb") as f:
            while block := f.read(1 << 20):
                copy.write(block)
        elapsed = time.perf_counter() - started
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
    return elapsed


def timed_process(command: list[str], log: Path) -> tuple[float, int, str]:
    """(seconds from process start to exit, peak RSS of the process tree in bytes, its stdout); stderr goes to `log`."""
    started = time.perf_counter()
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    peak, tree = 0, psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [tree, *tree.children(recursive=True)]))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    return elapsed, peak, process.stdout.read()


def timed_import(path: Path) -> tuple[float, int, dict]:
    """(seconds from process start to exit, peak RSS of the process tree in bytes, the import's JSON)."""
    log = path.with_suffix(".import.log")
    elapsed, peak, output = timed_process(["import-pipeline", "import", str(path), "--json"], log)
    if not output:
        raise RuntimeError(f"the import of {path.name} printed nothing; its log ends:\n" + log.read_text()[-3000:])
    return elapsed, peak, json.loads(output)


def snake_case_copy(path: Path, target: Path) -> Path:
    """The file with its header in snake_case (`Company Name` -> `company_name`), the names the baseline script needs."""
    with path.open("rb") as source, target.open("wb") as out:
        header = source.readline().decode()
        out.write(
            (",".join(re.sub(r"\W+", "_", h.strip()).lower() for h in header.rstrip("\r\n").split(",")) + "\n").encode()
        )
        shutil.copyfileobj(source, out, 1 << 20)
    return target


def timed_baseline(url: str, existing: Path, workload: Path) -> tuple[float, int, dict]:
    """The straightforward script in a database of its own on the same server: reset from `existing`, then `run` timed."""
    database = sql.Identifier(BASELINE_DATABASE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
    uri = make_conninfo(url, dbname=BASELINE_DATABASE)
    seed = snake_case_copy(existing, existing.with_name(f"baseline_{existing.name}"))
    file = snake_case_copy(workload, workload.with_name(f"baseline_{workload.name}"))
    log = workload.with_name(f"baseline_{workload.stem}.log")
    try:
        # Untimed; it ends with VACUUM ANALYZE and a CHECKPOINT of its own.
        reset = subprocess.run(
            [sys.executable, str(BASELINE), "reset", "--uri", uri, "--existing", str(seed)],
            capture_output=True,
            text=True,
        )
        if reset.returncode:
            raise RuntimeError(f"the baseline script's reset failed:\n{reset.stderr[-3000:]}")
        elapsed, peak, output = timed_process(
            [sys.executable, str(BASELINE), "run", "--uri", uri, "--file", str(file)], log
        )
        if not output.strip():
            raise RuntimeError(
                f"the baseline script printed nothing on {file.name}; its log ends:\n" + log.read_text()[-3000:]
            )
    finally:
        seed.unlink()
        file.unlink()
        # Dropping the database discards its buffers unwritten and frees its disk before the import runs.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
    return elapsed, peak, json.loads(output.strip().splitlines()[-1])


def bench(rows: int, existing_rows: int, work: Path) -> dict:
    from app_writes import probing, untouched_leads  # bench/ is the script's folder

    existing, workload = work / f"existing_{existing_rows}.csv", work / f"workload_{rows}.csv"
    url = os.environ["IMPORT_PIPELINE_DATABASE_URL"]
    generate(existing, existing_rows, 1)
    expected = generate(
        workload,
        rows,
        2,
        "--dup-rate",
        "0.02",
        "--invalid-rate",
        "0.03",
        "--overlap-with",
        str(existing),
        "--overlap-rate",
        "0.2",
    )
    fill_s, _, filled = timed_import(existing)
    assert filled["status"] == "success", filled["error"]
    checkpoint(url)
    copy_s = bare_copy(url, workload)
    baseline_s, baseline_peak, baseline = timed_baseline(url, existing, workload)
    lead_ids = untouched_leads(url, workload)
    checkpoint(url)
    with probing(url, lead_ids) as writes:
        import_s, peak, result = timed_import(workload)
    assert result["status"] == "success", result["error"]
    return {
        "rows": rows,
        "existing_leads": existing_rows,
        "fill_existing_s": round(fill_s, 2),
        "copy_s": round(copy_s, 2),
        "copy_rows_per_s": round(rows / copy_s),
        "baseline_s": round(baseline_s, 2),
        "baseline_rows_per_s": round(rows / baseline_s),
        "baseline_peak_rss_mb": round(baseline_peak / 2**20),
        "baseline_seconds": baseline.get("seconds"),
        "baseline_counts_match": all(baseline[v] == expected[k] for k, v in BASELINE_COUNTS.items()),
        "baseline_counts": {k: v for k, v in baseline.items() if k != "seconds"},
        "import_s": round(import_s, 2),
        "import_rows_per_s": round(rows / import_s),
        "ratio_import_to_copy": round(import_s / copy_s, 2),
        "ratio_import_to_baseline": round(import_s / baseline_s, 2),
        "peak_rss_mb": round(peak / 2**20),
        **writes,
        "step_seconds": result.get("step_seconds"),
        "load_seconds": result.get("load_seconds"),
        "counts_match": all(result[v] == expected[k] for k, v in COUNTS.items()),
        "counts": {v: result[v] for v in COUNTS.values()},
    }


def _verdict(value: float, target: float) -> str:
    return "met" if value <= target else "**missed**"


def _laps(seconds: dict | None, total: float | None = None, order: tuple[str, ...] = ()) -> str:
    """`{"parse": 3.71, ...}` as `parse 3.7, ...` for a table cell, known names in `order` first.

    With `total`, the time no lap accounts for (process start, imports, Dagster's bookkeeping) comes last.
    """
    seconds = seconds or {}
    names = [n for n in order if n in seconds] + [n for n in seconds if n not in order]
    cells = [f"{name} {seconds[name]:.1f}" for name in names]
    if total is not None and seconds:
        cells.append(f"rest {total - sum(seconds.values()):.1f}")
    return ", ".join(cells) or "-"


def _wait(by_kind: dict, kind: str) -> str:
    w = by_kind.get(kind)
    return f"{w['max_s']} / {w['p99_s']}" if w else "-"


def markdown(
    results: list[dict], machine: str, latency: dict | None, sensor: dict | None, workbooks: Sequence[dict] = ()
) -> str:
    lines = [
        f"Measured {datetime.date.today()} on {machine}.",
        "",
        "| target | measured | goal | |",
        "| --- | ---: | ---: | --- |",
    ]
    for r in results:
        memory_goal = TARGETS["peak_rss_mb_10m"] if r["rows"] > 1_000_000 else TARGETS["peak_rss_mb_1m"]
        to_copy, stretch = r["ratio_import_to_copy"], TARGETS["ratio_import_to_copy_stretch"]
        copy_verdict = _verdict(to_copy, TARGETS["ratio_import_to_copy"])
        if copy_verdict == "met":
            copy_verdict += ", stretch too" if to_copy <= stretch else ", stretch missed"
        slowest = r["app_write_slowest"]
        lines += [
            f"| T1 import / bare COPY, {r['rows']:,} rows | {r['import_s']} s / {r['copy_s']} s = {to_copy}x | "
            f"≤ {TARGETS['ratio_import_to_copy']:g}x (stretch {stretch:g}x) | {copy_verdict} |",
            f"| T1 import / straightforward script, {r['rows']:,} rows | {r['import_s']} s / {r['baseline_s']} s = "
            f"{r['ratio_import_to_baseline']}x | ≤ {TARGETS['ratio_import_to_baseline']}x | "
            f"{_verdict(r['ratio_import_to_baseline'], TARGETS['ratio_import_to_baseline'])} |",
            f"| T2 peak RSS, {r['rows']:,} rows | {r['peak_rss_mb']} MB | ≤ {memory_goal} MB | "
            f"{_verdict(r['peak_rss_mb'], memory_goal)} |",
            f"| Longest application write wait during the import, {r['rows']:,} rows | {r['app_write_wait_max_s']} s"
            f" ({slowest['kind'] or 'no write'}) | ≤ {TARGETS['app_write_wait_s']} s | "
            f"{_verdict(r['app_write_wait_max_s'], TARGETS['app_write_wait_s'])} |",
            f"| Application sessions dropped during the import, {r['rows']:,} rows | {r['sessions_dropped']} | "
            f"{TARGETS['sessions_dropped']} | {_verdict(r['sessions_dropped'], TARGETS['sessions_dropped'])} |",
        ]
    if latency:
        lines.append(
            f"| T3 1,000-row file, drop to commit | {latency['drop_to_commit_s']} s | ≤ {TARGETS['drop_to_commit_s']} s | "
            f"{_verdict(latency['drop_to_commit_s'], TARGETS['drop_to_commit_s'])} |"
        )
    if sensor:
        lines.append(
            f"| T4 slowest sensor tick, {sensor['files']:,} files | {sensor['slowest_tick_s']} s | "
            f"≤ {TARGETS['slowest_tick_s']} s | {_verdict(sensor['slowest_tick_s'], TARGETS['slowest_tick_s'])} |"
        )
        small = next(v for k, v in sensor.items() if k.startswith("largest_cursor_bytes_"))
        lines.append(
            f"| T4 largest cursor, {sensor['files']:,} vs {sensor['files'] // 10:,} files | "
            f"{sensor['largest_cursor_bytes']:,} vs {small:,} bytes | bounded | "
            f"{'met' if sensor['largest_cursor_bytes'] <= 2 * max(small, 1) else '**missed**'} |"
        )
    for w in workbooks:
        goal = TARGETS["workbook_peak_rss_mb"]
        lines.append(
            f"| T5 peak RSS of a {w['rows']:,}-row XLSX import | {w['xlsx_peak_rss_mb']} MB "
            f"({w['xlsx_import_s']} s, {w['ratio_xlsx_to_csv']}x the CSV) | ≤ {goal} MB | "
            f"{_verdict(w['xlsx_peak_rss_mb'], goal)} |"
        )
    if workbooks:
        from workbook import markdown as workbook_markdown  # bench/ is the script's folder

        lines += workbook_markdown(workbooks)
    if not results:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "| rows | existing leads | bare COPY s | COPY rows/s | straightforward s | import s | import rows/s | import / COPY | "
        "import / straightforward | peak RSS MB | straightforward RSS MB | counts (import, script) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {r['rows']:,} | {r['existing_leads']:,} | {r['copy_s']} | {r['copy_rows_per_s']:,} | {r['baseline_s']} | {r['import_s']} | "
        f"{r['import_rows_per_s']:,} | {r['ratio_import_to_copy']}x | {r['ratio_import_to_baseline']}x | {r['peak_rss_mb']} | "
        f"{r['baseline_peak_rss_mb']} | {'OK' if r['counts_match'] else 'MISMATCH'}, "
        f"{'OK' if r['baseline_counts_match'] else 'MISMATCH'} |"
        for r in results
    ]
    lines += [
        "",
        "Where the time went, in seconds (the import's `step_seconds` and `load_seconds`, the script's own laps; "
        "`rest`: the process's time outside them, its start and imports and, for the import, Dagster's bookkeeping):",
        "",
        "| rows | import steps | load phases | straightforward script |",
        "| ---: | --- | --- | --- |",
    ]
    lines += [
        f"| {r['rows']:,} | {_laps(r['step_seconds'], r['import_s'], STEPS)} | {_laps(r['load_seconds'])} | "
        f"{_laps(r['baseline_seconds'], r['baseline_s'])} |"
        for r in results
    ]
    lines += [
        "",
        "Application writes during the import, one every 0.2 s from another session (wait in seconds, max / p99):",
        "",
        "| rows | writes | UPDATE | INSERT | DELETE | slowest | errors | sessions dropped |",
        "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        by_kind, slowest = r["app_write_wait_by_kind"], r["app_write_slowest"]
        lines.append(
            f"| {r['rows']:,} | {r['app_writes']} | {_wait(by_kind, 'update')} | {_wait(by_kind, 'insert')} | "
            f"{_wait(by_kind, 'delete')} | {slowest['kind'] or '-'} at {slowest['at_s']} s | "
            f"{r['app_write_errors']['count']} | {r['sessions_dropped']} |"
        )
    messages = dict.fromkeys(m for r in results for m in r["app_write_errors"]["first"] + r["session_drops"])
    if messages:
        lines += ["", "First errors of the application's writes:", ""] + [f"* {m}" for m in messages]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="workload size; repeat for several")
    parser.add_argument(
        "--existing-rows", type=int, default=1_000_000, help="at most this many leads already in the table"
    )
    parser.add_argument("--skip-latency", action="store_true", help="skip T3 and T4")
    parser.add_argument(
        "--xlsx",
        type=int,
        action="append",
        help="T5: leads on one XLSX sheet against the same as CSV; repeat for several",
    )
    parser.add_argument(
        "--xlsx-cache", type=Path, default=Path(tempfile.gettempdir()) / "import-bench-workbooks", help="T5's files"
    )
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="import-bench-"))
    if not os.environ.get("IMPORT_PIPELINE_DATABASE_URL"):
        # Hold the embedded server for the whole run, so no import pays its start or stop.
        home = work / "home"
        os.environ["IMPORT_PIPELINE_HOME"] = str(home)
        # A first start creates and tunes the server (bulk_load_settings); its buffers apply from the second.
        subprocess.run([sys.executable, "-c", "from import_pipeline.cli import bootstrap; bootstrap()"], check=True)
        stop_embedded(home)
        from import_pipeline.cli import bootstrap

        bootstrap()
        atexit.register(stop_embedded, home)
    server = server_settings(os.environ["IMPORT_PIPELINE_DATABASE_URL"])
    machine = (
        f"{platform.machine()}, {psutil.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB, "
        f"Python {platform.python_version()}, PostgreSQL {server['server_version']} "
        f"(shared_buffers {server['shared_buffers']}, max_wal_size {server['max_wal_size']})"
    )
    results = []
    for rows in args.rows or []:
        with psycopg.connect(os.environ["IMPORT_PIPELINE_DATABASE_URL"], autocommit=True) as conn:
            conn.execute("TRUNCATE leads, lead_history, rejected_rows, imports CASCADE")
        results.append(bench(rows, min(rows, args.existing_rows), work))
        print(json.dumps(results[-1]), file=sys.stderr)
    workbooks = []
    for rows in args.xlsx or []:
        from workbook import bench_workbook  # bench/ is the script's folder

        workbooks.append(bench_workbook(rows, os.environ["IMPORT_PIPELINE_DATABASE_URL"], work, args.xlsx_cache))
        print(json.dumps(workbooks[-1]), file=sys.stderr)
    latency = sensor = None
    if not args.skip_latency:
        from latency import drop_to_commit  # bench/ is the script's folder
        from sensor_scale import sensor_scale

        from import_pipeline.config import home_dir, landing_dir

        sample = work / "latency_1000.csv"
        generate(sample, 1000, 3)
        latency = drop_to_commit(
            sample, landing_dir(home_dir()), os.environ["IMPORT_PIPELINE_DATABASE_URL"], work / "dev.log"
        )
        print(json.dumps(latency), file=sys.stderr)
        sensor = sensor_scale(work)
        print(json.dumps(sensor), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "server": server,
                "targets": TARGETS,
                "results": results,
                "latency": latency,
                "sensor": sensor,
                "workbooks": workbooks,
            },
            indent=2,
        )
    )
    table = markdown(results, machine, latency, sensor, workbooks)
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
