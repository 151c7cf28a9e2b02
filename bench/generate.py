"""Seeded lead files for tests, samples and the benchmark, with exactly known outcomes.

    python bench/generate.py OUT.csv --rows N --seed S [--dup-rate R] [--invalid-rate R]
                             [--overlap-with EXISTING.csv --overlap-rate R]

Prints the expected counts as one JSON line on stderr: rows, invalid, duplicates_in_file,
duplicates_existing, inserted (for a leads table holding exactly EXISTING's valid leads).
"""

import argparse
import json
import sys
from pathlib import Path

import polars as pl

CHUNK = 500_000
FIRST = [
    "Ann",
    "Bob",
    "Chloé",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Inès",
    "Jack",
    "Karim",
    "Léa",
    "Marc",
    "Nina",
]
LAST = ["Martin", "Bernard", "Dubois", "Smith", "Johnson", "Nguyen", "Garcia", "Müller", "Rossi", "Kowalski", "Silva"]
COMPANY = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Soylent", "Cyberdyne"]
SUFFIX = ["Inc", "SAS", "GmbH", "Ltd", "LLC", "SA"]
TITLE = ["CEO", "CTO", "Head of Sales", "Marketing Manager", "Buyer", "Office Manager", "VP Operations"]
INDUSTRY = ["Software", "Retail", "Real Estate", "Logistics", "Healthcare", "Manufacturing"]
CITY = [
    ("Paris", "IDF", "France"),
    ("Lyon", "ARA", "France"),
    ("Austin", "TX", "USA"),
    ("Boston", "MA", "USA"),
    ("Berlin", "BE", "Germany"),
    ("Leeds", "ENG", "UK"),
]
EMAIL_OK = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def _pick(words: list[str], index: pl.Expr) -> pl.Expr:
    return pl.lit(pl.Series(words)).get(index % len(words))


def leads(rows: int, seed: int, start: int = 0) -> pl.DataFrame:
    """`rows` distinct, valid leads numbered from `start`; every value a deterministic function of (seed, row)."""
    i = pl.int_range(start, start + rows, dtype=pl.Int64)
    h = i.hash(seed)
    city = h // 7 % len(CITY)
    first, last = _pick(FIRST, h // 3), _pick(LAST, h // 5)
    company = pl.format("{} {}", _pick(COMPANY, h // 11), _pick(SUFFIX, h // 13))
    return pl.select(
        company.alias("Company Name"),
        first.alias("First Name"),
        last.alias("Last Name"),
        pl.format("{}.{}.{}x{}@example{}.com", first.str.to_lowercase(), last.str.to_lowercase(), seed, i, h % 997)
        .str.replace_all("é", "e")
        .str.replace_all("è", "e")
        .str.replace_all("ü", "u")
        .alias("Email"),
        pl.format("0{}", 600_000_000 + h % 99_999_999).alias("Phone"),
        _pick(TITLE, h // 17).alias("Title"),
        _pick(INDUSTRY, h // 19).alias("Industry"),
        pl.format("https://www.example{}.com", h % 997).alias("Website"),
        _pick([c for c, _, _ in CITY], city).alias("City"),
        _pick([s for _, s, _ in CITY], city).alias("State"),
        _pick([c for _, _, c in CITY], city).alias("Country"),
        pl.format("S{}-{}", seed, i).alias("External ID"),
        pl.format("met at event {}", h % 50).alias("Notes"),
        _pick(["web", "fair", "referral", "list"], h // 23).alias("Lead Source"),
        _pick(["ann", "bob", "cid"], h // 29).alias("Owner"),
    )


def with_faults(
    base: pl.DataFrame,
    seed: int,
    start: int,
    dup_rate: float,
    invalid_rate: float,
    overlap: pl.Series | None,
    overlap_rate: float,
) -> pl.DataFrame:
    """Turn some rows into in-file duplicates, invalid rows and leads already in the database."""
    n = base.height
    i = pl.int_range(start, start + n, dtype=pl.Int64)
    r = (i.hash(seed + 1) % 1_000_000) / 1_000_000
    role = (
        pl.when(r < invalid_rate)
        .then(pl.lit("invalid"))
        .when(r < invalid_rate + dup_rate)
        .then(pl.lit("dup"))
        .when(r < invalid_rate + dup_rate + overlap_rate)
        .then(pl.lit("overlap"))
        .otherwise(pl.lit("new"))
    )
    frame = base.with_columns(role.alias("_role"), i.alias("_i"), (i.hash(seed + 2) % 3).alias("_kind"))
    # A duplicate repeats the email of the latest new row before it, in another case.
    source = pl.when(pl.col("_role") == "new").then(pl.col("Email")).forward_fill().shift(1)
    frame = frame.with_columns(
        pl.when((pl.col("_role") == "dup") & source.is_not_null())
        .then(pl.when(pl.col("_i") % 2 == 0).then(source.str.to_uppercase()).otherwise(pl.format(" {} ", source)))
        .otherwise(pl.col("Email"))
        .alias("Email")
    )
    if overlap is not None and overlap.len():
        pick = pl.lit(overlap).get((pl.col("_i") * 7_919) % overlap.len())
        frame = frame.with_columns(
            pl.when(pl.col("_role") == "overlap").then(pick).otherwise(pl.col("Email")).alias("Email")
        )
    invalid, kind = pl.col("_role") == "invalid", pl.col("_kind")
    frame = frame.with_columns(
        pl.when(invalid & (kind == 0)).then(None).otherwise(pl.col("Company Name")).alias("Company Name"),
        pl.when(invalid & (kind == 1))
        .then(pl.format("no-at-sign{}.example.com", pl.col("_i")))
        .when(invalid & (kind == 2))
        .then(None)
        .otherwise(pl.col("Email"))
        .alias("Email"),
        pl.when(invalid & (kind == 2)).then(None).otherwise(pl.col("Phone")).alias("Phone"),
        pl.when(invalid & (kind == 2)).then(None).otherwise(pl.col("External ID")).alias("External ID"),
    )
    return frame.drop("_role", "_i", "_kind")


def _keys(frame: pl.DataFrame) -> pl.DataFrame:
    """Which rows are valid and their normalized email, by the pipeline's rules restated independently."""
    email = pl.col("Email").str.strip_chars()
    has = lambda c: pl.col(c).is_not_null() & (pl.col(c).str.strip_chars() != "")  # noqa: E731
    valid = (
        has("Company Name")
        & (~has("Email") | email.str.contains(EMAIL_OK))
        & (has("Email") | has("Phone") | has("External ID"))
    )
    key = pl.when(has("Email")).then(pl.col("Email").str.replace_all(r"\s", "").str.to_lowercase())
    return frame.select(valid.alias("valid"), key.alias("key"))


def expected(frame: pl.DataFrame, existing: pl.Series | None) -> dict:
    """The exact outcome of importing `frame` into a table holding `existing` emails."""
    keys = _keys(frame)
    valid = keys.filter("valid")
    first = valid.filter(pl.col("key").is_null() | pl.col("key").is_first_distinct())
    known = (
        first["key"].is_in(existing.str.to_lowercase().implode())
        if existing is not None
        else pl.Series([False] * first.height)
    )
    return {
        "rows": frame.height,
        "invalid": frame.height - valid.height,
        "duplicates_in_file": valid.height - first.height,
        "duplicates_existing": int(known.sum()),
        "inserted": first.height - int(known.sum()),
    }


def valid_emails(path: Path) -> pl.Series:
    """The emails a previously generated file leaves in the leads table."""
    frame = pl.read_csv(path, infer_schema=False)
    keys = _keys(frame)
    return frame.filter(keys["valid"] & keys["key"].is_not_null() & keys["key"].is_first_distinct())[
        "Email"
    ].str.strip_chars()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dup-rate", type=float, default=0.0)
    parser.add_argument("--invalid-rate", type=float, default=0.0)
    parser.add_argument("--overlap-with", type=Path)
    parser.add_argument("--overlap-rate", type=float, default=0.0)
    args = parser.parse_args()

    existing = valid_emails(args.overlap_with) if args.overlap_with else None
    totals: dict[str, int] = {}
    seen = pl.Series("key", [], pl.String)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as f:
        for start in range(0, args.rows, CHUNK):
            rows = min(CHUNK, args.rows - start)
            chunk = with_faults(
                leads(rows, args.seed, start),
                args.seed,
                start,
                args.dup_rate,
                args.invalid_rate,
                existing,
                args.overlap_rate if existing is not None else 0.0,
            )
            chunk.write_csv(f, include_header=start == 0)
            keys = _keys(chunk)
            # Duplicates across chunks count too: carry the keys seen so far.
            counts = expected(chunk, None)
            fresh = keys.filter("valid")["key"].drop_nulls()
            repeated = int(fresh.is_in(seen.implode()).sum()) if seen.len() else 0
            counts["duplicates_in_file"] += repeated
            first = keys.filter(
                pl.col("valid")
                & pl.col("key").is_not_null()
                & pl.col("key").is_first_distinct()
                & ~pl.col("key").is_in(seen.implode())
            )
            known = int(first["key"].is_in(existing.str.to_lowercase().implode()).sum()) if existing is not None else 0
            counts["duplicates_existing"] = known
            counts["inserted"] = counts["inserted"] - repeated - known
            seen = pl.concat([seen, fresh.unique()])
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
    print(json.dumps(totals), file=sys.stderr)


if __name__ == "__main__":
    main()
