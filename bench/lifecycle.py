"""Plan and revert at scale, as ratios to the import of the same file measured in the same run.

    python bench/lifecycle.py --rows 100000 [--out bench/out]

In a state folder of its own (its own embedded server): import an existing-leads file (seed 1, ROWS
leads), then a workload of ROWS rows (seed 2, half of them matching existing leads) with
`on_existing: update` three ways, each `import-pipeline ...` from process start to exit: (a) as a plan,
(b) for real, (c) its revert. Checks that the plan's counts equal the import's and that the revert
leaves exactly the existing leads. Writes lifecycle.json and lifecycle.md to --out.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
COUNTED = ("rows_read", "rows_rejected", "duplicates_in_file", "duplicates_existing", "inserted", "updated")


def _cli(env: dict, *args: str) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "import_pipeline", *args, "--json"], env=env, capture_output=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"import-pipeline {' '.join(args)} failed ({done.returncode}): {done.stdout!r} {done.stderr!r}"
        )
    return json.loads(done.stdout), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lifecycle-"))
    env = {k: v for k, v in os.environ.items() if k not in ("IMPORT_PIPELINE_DATABASE_URL", "DAGSTER_HOME")}
    env["IMPORT_PIPELINE_HOME"] = str(work / "home")
    existing, workload, config = work / "existing.csv", work / "workload.csv", work / "update.yaml"
    generate = [sys.executable, str(HERE / "generate.py")]
    subprocess.run([*generate, str(existing), "--rows", str(args.rows), "--seed", "1"], check=True, capture_output=True)
    subprocess.run(
        [
            *generate,
            *(str(workload), "--rows", str(args.rows), "--seed", "2"),
            *("--overlap-with", str(existing), "--overlap-rate", "0.5"),
        ],
        check=True,
        capture_output=True,
    )
    config.write_text("ops:\n  load:\n    config:\n      on_existing: update\n")
    try:
        first, _ = _cli(env, "import", str(existing))
        plan, plan_s = _cli(env, "import", str(workload), "--config", str(config), "--plan")
        real, import_s = _cli(env, "import", str(workload), "--config", str(config))
        revert, revert_s = _cli(env, "revert", real["partition_key"])
        url = subprocess.run(
            [sys.executable, "-m", "import_pipeline", "dsn"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        with psycopg.connect(url) as conn:
            leads_after = conn.execute("SELECT count(*) FROM leads").fetchone()[0]
    finally:
        subprocess.run([sys.executable, "-m", "import_pipeline", "stop", "--force"], env=env, capture_output=True)
    same_counts = {k: plan[k] for k in COUNTED} == {k: real[k] for k in COUNTED}
    result = {
        "rows": args.rows,
        "existing_leads": first["inserted"],
        "plan_s": round(plan_s, 2),
        "import_s": round(import_s, 2),
        "revert_s": round(revert_s, 2),
        "plan_over_import": round(plan_s / import_s, 2),
        "revert_over_import": round(revert_s / import_s, 2),
        "plan_counts_equal_import": same_counts,
        "import": {k: real[k] for k in COUNTED},
        "revert": {k: revert[k] for k in ("rows_changed", "removed", "restored", "conflict", "untouched")},
        "leads_after_revert": leads_after,
        "revert_exact": leads_after == first["inserted"] and revert["conflict"] == 0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lifecycle.json").write_text(json.dumps(result, indent=2))
    (args.out / "lifecycle.md").write_text(
        "| rows | existing | plan s | import s | revert s | plan / import | revert / import | rows changed | exact |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
        f"| {args.rows:,} | {first['inserted']:,} | {plan_s:.1f} | {import_s:.1f} | {revert_s:.1f} | "
        f"{result['plan_over_import']:.2f}x | {result['revert_over_import']:.2f}x | "
        f"{revert['rows_changed']:,} | {'yes' if same_counts and result['revert_exact'] else 'NO'} |\n"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
