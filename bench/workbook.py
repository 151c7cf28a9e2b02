"""Workbook benchmark: the same leads as an XLSX sheet and as a CSV, each imported through the real job.

    python bench/run.py --xlsx 1048575 --xlsx 250000   # T5 in results.{json,md}, beside the other targets
    python bench/workbook.py --rows 1048575            # only writes the files (cached) and prints their paths

The workbook holds a header and `rows` leads on one sheet (1,048,575 fill Excel's 1,048,576 rows), written
by xlsxwriter in constant_memory mode (strings inline, one row at a time, as streaming exporters write them);
the CSV holds the same leads, as generate.py writes them. Both are cached under --folder: writing the 1M-row
workbook takes about 2 minutes.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import xlsxwriter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import CHUNK, leads, with_faults  # noqa: E402  (bench/ is the script's folder)

# The CSV benchmark's shape (bench/run.py): 2% in-file duplicates, 3% invalid rows; no existing leads.
DUP_RATE, INVALID_RATE = 0.02, 0.03


def frames(rows: int, seed: int):
    """The workload's leads, CHUNK rows at a time, as generate.py writes them."""
    for start in range(0, rows, CHUNK):
        yield with_faults(leads(min(CHUNK, rows - start), seed, start), seed, start, DUP_RATE, INVALID_RATE, None, 0.0)


def write_files(folder: Path, rows: int, seed: int = 2) -> tuple[Path, Path]:
    """(the XLSX, the CSV) of the same `rows` leads, written once and reused from `folder` after that."""
    folder.mkdir(parents=True, exist_ok=True)
    xlsx, csv = folder / f"workbook_{rows}_{seed}.xlsx", folder / f"workbook_{rows}_{seed}.csv"
    if not csv.exists():
        partial = csv.with_suffix(".partial")
        with partial.open("wb") as f:
            for i, frame in enumerate(frames(rows, seed)):
                frame.write_csv(f, include_header=i == 0)
        partial.rename(csv)
    if not xlsx.exists():
        partial = xlsx.with_suffix(".partial")
        book = xlsxwriter.Workbook(str(partial), {"constant_memory": True})
        sheet = book.add_worksheet("Leads")
        at = 0
        for frame in frames(rows, seed):
            if at == 0:
                sheet.write_row(0, 0, frame.columns)
                at = 1
            for row in frame.iter_rows():
                for c, value in enumerate(row):
                    if value is not None:
                        sheet.write_string(at, c, value)
                at += 1
        book.close()
        partial.rename(xlsx)
    return xlsx, csv


READ_ONLY = """
import sys
from pathlib import Path
from import_pipeline.parse import ParseConfig, read_table
table = read_table(Path(sys.argv[1]), ParseConfig(), Path(sys.argv[2]))
print(sum(chunk.cells.height for chunk in table.chunks))
"""


def read_alone(path: Path, work: Path) -> tuple[float, int, int]:
    """(seconds, peak RSS in bytes, records) of the parse stage's reader alone, in a process of its own."""
    from run import timed_process  # bench/ is the script's folder

    log = work / f"{path.name}.read.log"
    elapsed, peak, output = timed_process([sys.executable, "-c", READ_ONLY, str(path), str(work)], log)
    if not output.strip():
        raise RuntimeError(f"reading {path.name} printed nothing; its log ends:\n" + log.read_text()[-3000:])
    return elapsed, peak, int(output)


def bench_workbook(rows: int, url: str, work: Path, cache: Path) -> dict:
    """The XLSX import and the CSV import of the same leads, on the same server, each from an empty `leads`."""
    import psycopg
    from run import checkpoint, timed_import

    xlsx, csv = write_files(cache, rows)
    results = {}
    for kind, cached in (("xlsx", xlsx), ("csv", csv)):
        path = work / cached.name  # imports of files outside the landing folder leave them in place
        shutil.copyfile(cached, path)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE leads, lead_history, rejected_rows, imports CASCADE")
        checkpoint(url)
        elapsed, peak, result = timed_import(path)
        assert result["status"] == "success", result["error"]
        read_s, read_peak, records = read_alone(path, work)
        path.unlink()
        results[kind] = {
            "import_s": round(elapsed, 2),
            "peak_rss_mb": round(peak / 2**20),
            "read_s": round(read_s, 2),
            "read_peak_rss_mb": round(read_peak / 2**20),
            "records": records,
            "counts": {k: result[k] for k in ("rows_read", "rows_rejected", "duplicates_in_file", "inserted")},
            "step_seconds": result.get("step_seconds"),
        }
    return {
        "rows": rows,
        "sheet_mb": round(_sheet_bytes(xlsx) / 2**20),
        **{f"{kind}_{k}": v for kind, r in results.items() for k, v in r.items()},
        "ratio_xlsx_to_csv": round(results["xlsx"]["import_s"] / results["csv"]["import_s"], 2),
        "counts_match": results["xlsx"]["counts"] == results["csv"]["counts"],
    }


def _sheet_bytes(xlsx: Path) -> int:
    import zipfile

    with zipfile.ZipFile(xlsx) as archive:
        return sum(i.file_size for i in archive.infolist() if i.filename.startswith("xl/worksheets/"))


def markdown(results: list[dict]) -> list[str]:
    """T5's rows for results.md: the import of each workbook against the same leads as CSV, and memory by size."""
    lines = [
        "",
        "Workbooks (T5): the same leads as one XLSX sheet (xlsxwriter, inline strings) and as CSV, each imported "
        "into an empty `leads`; `read`: the parse stage's reader alone, in a process of its own:",
        "",
        "| rows | sheet XML MB | XLSX import s | CSV import s | XLSX / CSV | XLSX peak RSS MB | CSV peak RSS MB | "
        "XLSX read s | XLSX read peak RSS MB | counts |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {r['rows']:,} | {r['sheet_mb']:,} | {r['xlsx_import_s']} | {r['csv_import_s']} | {r['ratio_xlsx_to_csv']}x | "
        f"{r['xlsx_peak_rss_mb']} | {r['csv_peak_rss_mb']} | {r['xlsx_read_s']} | {r['xlsx_read_peak_rss_mb']} | "
        f"{'same' if r['counts_match'] else 'MISMATCH'} |"
        for r in results
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_048_575)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/import-bench-workbooks"))
    args = parser.parse_args()
    xlsx, csv = write_files(args.folder, args.rows, args.seed)
    print(json.dumps({"xlsx": str(xlsx), "csv": str(csv)}))


if __name__ == "__main__":
    main()
