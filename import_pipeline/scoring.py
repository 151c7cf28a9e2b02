"""Possible-duplicate scoring: a file's rows no exact key matched, against live leads and the file's other rows.

A row is compared only with the leads (and earlier rows) that share one of its blocking keys (`BLOCKS`); a key
shared by more than `max_block` leads (a very common surname at a very common company) says too little and is
skipped. Each compared pair gets a verdict per field, points per verdict (`WEIGHTS`) and a score from 0 to 1;
the best candidate of each row from `review_at` goes to the temporary table `scored`.

The rows are judged against `lead_comparison` one page of leads at a time (`LeadPairs`): nothing of a page is
kept but its pairs from review_at, so the memory follows a page, not the table (holding every lead's values
instead, 1M leads peaked at 700 MB against 342 MB for the import without scoring). The pairs are judged with
polars, each fuzzy function once per distinct pair of values (the 1.1 million pairs of 100,000 rows at 1M
leads): rapidfuzz's Levenshtein distance (fuzzystrmatch's `levenshtein`) and pg_trgm's trigram similarity,
computed alike here. In SQL the same verdicts took 14.1 s and the sides' normalization 18.4 s.
"""

import dataclasses
import importlib.resources
from functools import cache

import numpy as np
import polars as pl
import psycopg
from psycopg import sql
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cpdist

from import_pipeline.comparison import (
    BLOCKS,
    COMPARED_FIELDS,
    ROLE_LOCAL_PARTS,
    SIDES,
    WORD_SIDES,
    block_key,
    by_database,
    comparison_values,
    hashed,
    words_of,
)
from import_pipeline.possible_duplicates import FLAGGED, REVIEW, DuplicateScoring
from import_pipeline.schema import PHONE_E164, SOURCE_ROW
from import_pipeline.staging import copy_frames

# Addresses anyone can have: the same domain there says nothing of the company.
FREE_MAIL_DOMAINS = (
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.fr", "yahoo.co.uk", "hotmail.com", "hotmail.fr",
    "outlook.com", "live.com", "msn.com", "icloud.com", "me.com", "aol.com", "protonmail.com", "proton.me",
    "gmx.de", "gmx.net", "web.de", "orange.fr", "free.fr", "laposte.net", "yandex.ru", "mail.ru", "qq.com",
    "163.com",
)  # fmt: skip

# Points per field verdict; the score is their sum over 100, between 0 and 1. A surname or first name
# that differs weighs most: colleagues share a company, a domain and a city, relatives a surname too.
WEIGHTS: dict[str, dict[str, int]] = {
    "first_name": {"same": 20, "nickname": 16, "typo": 14, "initial": 10, "different": -25},
    "last_name": {"same": 30, "typo": 22, "sounds alike": 16, "different": -35},
    "company": {"same": 15, "similar": 8, "different": -5},
    # A local part made of the person's own name (john.smith) is shared by namesakes; another one is not.
    "email": {"same local part": 20, "same name-based local part": 6, "same domain": 5},
    "phone": {"same": 20, "different": -5},
    "city": {"same": 5, "different": -5},
}
# Pairs judged at once, of a page of leads or of the file's own rows: 200,000 rows into 1M leads peaked at 662 MB
# with 100,000, at 732 MB with 250,000 (as fast).
PAIRS_PER_JUDGE = 100_000
# A row's best candidate as `best_candidates` hands it to `write_scored`: a live lead or an earlier row.
FOUND_SCHEMA = {
    "source_row": pl.Int64, "lead_id": pl.Int64, "candidate_row": pl.Int64, "score": pl.Float64, "band": pl.String,
    **dict.fromkeys(WEIGHTS, pl.String),
}  # fmt: skip


@cache
def first_name_forms() -> pl.DataFrame:
    """Each name of the `nicknames` package's list with the formal names it is a form of (every formal name
    is its own form): bob -> robert, robert -> robert."""
    text = importlib.resources.files("nicknames").joinpath("names.csv").read_text(encoding="utf-8")
    pairs: set[tuple[str, str]] = set()
    for line in text.splitlines()[1:]:
        formal, relationship, name = (part.strip().lower() for part in line.split(","))
        if relationship == "has_nickname" and formal and name:
            pairs |= {(formal, formal), (name, formal)}
    return pl.DataFrame(sorted(pairs), schema=["name", "formal"], orient="row")


def best_without(field: str) -> int:
    """The most points a pair can have when `field`'s verdict is `different`."""
    others = sum(max(0, *verdicts.values()) for f, verdicts in WEIGHTS.items() if f != field)
    return others + WEIGHTS[field]["different"]


def _edits(pairs: pl.DataFrame) -> pl.Series:
    """The Levenshtein distance of each of `pairs`' (x, y): fuzzystrmatch's levenshtein(), locally."""
    x, y = pairs.get_column("x").to_list(), pairs.get_column("y").to_list()
    return pl.Series(cpdist(x, y, scorer=Levenshtein.distance, dtype=np.int32, workers=-1) if x else [], dtype=pl.Int32)


def _trigrams(words: pl.Series) -> pl.DataFrame:
    """(w, t): pg_trgm's trigrams of each of `words` (one word each: two spaces before it, one after), once each."""
    padded = pl.concat_str(pl.lit("  "), pl.col("w"), pl.lit(" "))
    starts = pl.int_ranges(0, pl.col("w").str.len_chars() + 1)
    return (
        words.unique().to_frame("w").with_columns(i=starts).explode("i")
        .select("w", t=padded.str.slice(pl.col("i"), 3))
        .unique()
    )  # fmt: skip


def _similarity(pairs: pl.DataFrame) -> pl.Series:
    """pg_trgm's similarity() of each of `pairs`' (x, y), one-word company keys: shared trigrams over all (in
    polars: a Python loop over sets took 0.36 s of the 1.1 s of judging at 1M leads)."""
    d = pairs.select("x", "y").with_row_index("k")
    trigrams = _trigrams(pl.concat([d.get_column("x"), d.get_column("y")]))
    counts = trigrams.group_by("w").len()
    common = (
        d.join(trigrams.rename({"w": "x"}), on="x")
        .join(trigrams.rename({"w": "y"}), on=["y", "t"])
        .group_by("k")
        .len("common")
    )
    shares = (
        d.join(common, on="k", how="left", maintain_order="left")
        .join(counts.rename({"w": "x", "len": "nx"}), on="x", how="left", maintain_order="left")
        .join(counts.rename({"w": "y", "len": "ny"}), on="y", how="left", maintain_order="left")
        .select(share=pl.col("common").fill_null(0) / (pl.col("nx") + pl.col("ny") - pl.col("common").fill_null(0)))
    )
    return shares.get_column("share").cast(pl.Float32)


def _distinct(pairs: pl.DataFrame, words: pl.DataFrame, a: str, b: str, *more: str) -> pl.DataFrame:
    """The distinct pairs of different, present values of `a` and `b` (hashes, renamed a, b; `more` kept),
    with the values themselves as x and y."""
    present = pl.col(a).is_not_null() & pl.col(b).is_not_null() & (pl.col(a) != pl.col(b))
    d = pairs.filter(present).select(a, b, *more).unique().rename({a: "a", b: "b"})
    return d.join(words.rename({"hash": "a", "value": "x"}), on="a", maintain_order="left").join(
        words.rename({"hash": "b", "value": "y"}), on="b", maintain_order="left"
    )


def _first_name(pairs: pl.DataFrame, words: pl.DataFrame) -> pl.DataFrame:
    """`pairs` with the first names' verdict: same, initial, nickname, typo (one edit), different."""
    d = _distinct(pairs, words, "af", "bf")
    forms = first_name_forms()
    nicknames = (
        d.join(forms, left_on="x", right_on="name")
        .join(forms, left_on=["y", "formal"], right_on=["name", "formal"], how="semi")
        .select("a", "b")
        .unique()
        .with_columns(nickname=pl.lit(True))
    )
    short = pl.min_horizontal(pl.col("x").str.len_chars(), pl.col("y").str.len_chars())
    initial = ((pl.col("x").str.len_chars() == 1) & pl.col("y").str.starts_with(pl.col("x"))) | (
        (pl.col("y").str.len_chars() == 1) & pl.col("x").str.starts_with(pl.col("y"))
    )
    d = d.with_columns(edits=_edits(d)).join(nicknames, on=["a", "b"], how="left", maintain_order="left")
    d = d.with_columns(
        first_name=pl.when(initial)
        .then(pl.lit("initial"))
        .when(pl.col("nickname").fill_null(False))
        .then(pl.lit("nickname"))
        .when((short >= 4) & (pl.col("edits") <= 1))
        .then(pl.lit("typo"))
        .otherwise(pl.lit("different"))
    ).select(af="a", bf="b", first_name="first_name")
    return _with_verdict(pairs, d, "af", "bf", "first_name")


def _with_verdict(pairs: pl.DataFrame, verdicts: pl.DataFrame, a: str, b: str, field: str) -> pl.DataFrame:
    """`pairs` with `field`: null when a side is missing, same when equal, else the verdict of the two values."""
    # Looked up on the two columns only: joining the whole frame copied every column (1.2 s of 8.6 s of scoring).
    looked = pairs.select(a, b).join(verdicts, on=[a, b], how="left", maintain_order="left").get_column(field)
    return pairs.with_columns(
        pl.when(pl.col(a).is_null() | pl.col(b).is_null())
        .then(None)
        .when(pl.col(a) == pl.col(b))
        .then(pl.lit("same"))
        .otherwise(looked)
        .alias(field)
    )


def _last_name(pairs: pl.DataFrame, words: pl.DataFrame) -> pl.DataFrame:
    """`pairs` with the surnames' verdict: same, typo (one edit, two from eight letters), sounds alike, different."""
    d = _distinct(pairs, words, "al", "bl", "als", "bls")
    short = pl.min_horizontal(pl.col("x").str.len_chars(), pl.col("y").str.len_chars())
    d = d.with_columns(edits=_edits(d)).with_columns(
        last_name=pl.when(pl.col("edits") <= pl.when(short >= 8).then(2).otherwise(1))
        .then(pl.lit("typo"))
        .when(pl.col("als") == pl.col("bls"))
        .then(pl.lit("sounds alike"))
        .otherwise(pl.lit("different"))
    )
    return _with_verdict(pairs, d.select(al="a", bl="b", last_name="last_name"), "al", "bl", "last_name")


def _name_based(pairs: pl.DataFrame, words: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """(ae, al, bl, af, bf) of `pairs` whose email local part (the same on both sides) is made of either name
    (john.smith, jsmith, johns): namesakes share it too."""
    d = pairs.filter(pl.col("ae") == pl.col("be")).select("ae", "al", "bl", "af", "bf").unique()
    for side, column in (("e", "ae"), ("l", "al"), ("l", "bl"), ("f", "af"), ("f", "bf")):
        d = d.join(words[side].rename({"hash": column, "value": f"{column}_"}), on=column, how="left", nulls_equal=True)
    contains = pl.col("ae_").str.contains
    surname_a = pl.coalesce("al_", "bl_", pl.lit("-")).str.replace_all(" ", "", literal=True)
    surname_b = pl.coalesce("bl_", "al_", pl.lit("-")).str.replace_all(" ", "", literal=True)
    first = pl.coalesce("af_", "bf_", pl.lit(""))
    name_based = (
        contains(surname_a, literal=True)
        | contains(surname_b, literal=True)
        | ((first.str.len_chars() >= 3) & contains(first, literal=True))
    )
    return d.select("ae", "al", "bl", "af", "bf", name_based=name_based)


def _exact_fields(pairs: pl.DataFrame, words: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """`pairs` with the verdicts that need no fuzzy function: email, phone, city."""
    name_based = (
        pairs.select("ae", "al", "bl", "af", "bf")
        .join(
            _name_based(pairs, words),
            on=["ae", "al", "bl", "af", "bf"],
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
        .get_column("name_based")
    )
    roles = pl.Series(ROLE_LOCAL_PARTS).hash().implode()
    free_mail = pl.Series(FREE_MAIL_DOMAINS).hash().implode()
    both = {f: pl.col(f"a{f}").is_not_null() & pl.col(f"b{f}").is_not_null() for f in ("p", "y")}
    return pairs.with_columns(
        email=pl.when((pl.col("ae") == pl.col("be")) & ~pl.col("ae").is_in(roles))
        .then(pl.when(name_based).then(pl.lit("same name-based local part")).otherwise(pl.lit("same local part")))
        .when((pl.col("ad") == pl.col("bd")) & ~pl.col("ad").is_in(free_mail))
        .then(pl.lit("same domain")),
        phone=pl.when(both["p"]).then(
            pl.when(pl.col("ap") == pl.col("bp")).then(pl.lit("same")).otherwise(pl.lit("different"))
        ),
        city=pl.when(both["y"]).then(
            pl.when(pl.col("ay") == pl.col("by")).then(pl.lit("same")).otherwise(pl.lit("different"))
        ),
    )


def _points(field: str) -> pl.Expr:
    """The points of `field`'s verdict (0 when it has none: a value is missing)."""
    return pl.col(field).replace_strict(WEIGHTS[field], default=0, return_dtype=pl.Int32).fill_null(0)


def judge(pairs: pl.DataFrame, words: dict[str, pl.DataFrame], scoring: DuplicateScoring) -> pl.DataFrame:
    """Each pair (a*: the row's SIDES, b*: the candidate's, as `hashed`; `words`: the values of f, l, c and the
    rows' e) with its verdicts and score, from `review_at` only."""
    pairs = _last_name(pairs, words["l"])
    if best_without("last_name") < scoring.review_at * 100:
        # A surname that differs caps the score below review_at (0.45 at the default weights): most pairs of a
        # block of colleagues sharing a first name are dropped before the other verdicts.
        pairs = pairs.filter(pl.col("last_name").ne_missing("different"))
    pairs = _exact_fields(_first_name(pairs, words["f"]), words)
    others = pl.sum_horizontal(_points(f) for f in WEIGHTS if f != "company")
    company_known = pl.col("ac").is_not_null() & pl.col("bc").is_not_null()
    # Only a pair that could reach review_at with a similar company needs the similarity itself.
    best = others + pl.when(pl.col("ac") == pl.col("bc")).then(15).when(company_known).then(8).otherwise(0)
    pairs = pairs.filter(best >= scoring.review_at * 100)
    d = _distinct(pairs, words["c"], "ac", "bc")
    d = d.with_columns(
        company=pl.when(_similarity(d) >= 0.5).then(pl.lit("similar")).otherwise(pl.lit("different"))
    ).select(ac="a", bc="b", company="company")
    pairs = _with_verdict(pairs, d, "ac", "bc", "company")
    points = pl.sum_horizontal(_points(f) for f in WEIGHTS).clip(0, 100)
    return pairs.with_columns(score=points / 100).filter(pl.col("score") >= scoring.review_at)


def _row_keys(rows: pl.DataFrame) -> pl.DataFrame:
    """(key, source_row) of each row's blocking keys, as `LeadPairs.judge_page` hashes the leads'."""
    return pl.concat(rows.select(key=block_key(b), source_row="source_row").drop_nulls("key") for b in BLOCKS)


def _in_file_pairs(row_keys: pl.DataFrame, max_block: int) -> pl.DataFrame:
    """The (source_row, candidate_row) pairs with an earlier row sharing a key of at most max_block rows."""
    shared = row_keys.group_by("key").len().filter(pl.col("len").is_between(2, max_block))
    keyed = row_keys.join(shared.select("key"), on="key", how="semi")
    return (
        keyed.join(keyed.rename({"source_row": "candidate_row"}), on="key")
        .filter(pl.col("candidate_row") < pl.col("source_row"))
        .select("source_row", "candidate_row", lead_id=pl.lit(None, pl.Int64))
    )


def _best(judged: pl.DataFrame) -> pl.DataFrame:
    """Each row's best candidate; between equals, a live lead before a row of the file, then the oldest."""
    ordered = judged.sort(
        ["source_row", "score", "lead_id", "candidate_row"], descending=[False, True, False, False], nulls_last=True
    )
    return ordered.unique("source_row", keep="first", maintain_order=True)


def _sides(frame: pl.DataFrame, key: str, prefix: str, rename: str) -> pl.DataFrame:
    """`frame`'s SIDES `hashed`, prefixed, keyed by `key` (renamed `rename`)."""
    return frame.select(pl.col(key).alias(rename), *(hashed(s).alias(prefix + s) for s in SIDES))


def file_rows(leads: pl.LazyFrame) -> pl.LazyFrame:
    """What the values of a file's rows (`row_values`) are computed from, as the staging takes it (`staged_frame`):
    a part's other columns (its unmapped `extra.*` ones too) are not read."""
    phone = pl.col(PHONE_E164) if PHONE_E164 in leads.collect_schema() else pl.lit(None, pl.String)
    return leads.select(SOURCE_ROW, *COMPARED_FIELDS, phone.alias(PHONE_E164))


def row_values(cur: psycopg.Cursor, rows: pl.DataFrame) -> pl.DataFrame:
    """The comparison values (source_row, SIDES, BLOCKS) of a file's rows (`file_rows`): what they are scored on,
    and what the leads they become take in `lead_comparison`. Their email key is the staging's, by the database."""
    emails, keys = by_database(cur, rows.get_column("email"), "lead_email_key")
    email_key = pl.col("email").replace_strict(emails, keys, default=None, return_dtype=pl.String)
    return comparison_values(cur, rows.with_columns(email_key=email_key).drop("email"))


@dataclasses.dataclass(frozen=True)
class RowsToScore:
    """A file's rows as scoring compares them with the leads and with each other."""

    keys: pl.DataFrame  # key, source_row: each row's blocking keys, as `block_key` hashes them
    wanted: pl.DataFrame  # key: the distinct keys
    sides: pl.DataFrame  # source_row, a + SIDES hashed
    words: dict[str, pl.DataFrame]  # the rows' values of WORD_SIDES and e: value, hash

    @classmethod
    def of(cls, values: pl.DataFrame) -> "RowsToScore":
        """The rows of `values` (`row_values`)."""
        keys = _row_keys(values)
        words = {side: words_of([values.get_column(side)]) for side in (*WORD_SIDES, "e")}
        sides = _sides(values, "source_row", "a", "source_row")
        return cls(keys, keys.select("key").unique(), sides, words)

    def only(self, source_rows: pl.Series) -> "RowsToScore":
        """These rows of `source_rows` alone (their words are kept: more words than values judge the same)."""
        kept = pl.col("source_row").is_in(source_rows.implode())
        keys = self.keys.filter(kept)
        return dataclasses.replace(
            self,
            keys=keys,
            wanted=keys.select("key").unique(),
            sides=self.sides.filter(kept),
        )


# What `LeadPairs` keeps of a judged pair: the key that paired it, and what `best_candidates` hands on.
_JUDGED = ("key", "source_row", "lead_id", "candidate_row", "score", *WEIGHTS)


@dataclasses.dataclass
class LeadPairs:
    """The file's rows judged against the live leads, one page of `lead_comparison` at a time: nothing of the leads
    is kept but the pairs from review_at and how many leads have each of the rows' keys (the memory of the scoring
    does not grow with the table)."""

    scoring: DuplicateScoring
    judged: list[pl.DataFrame] = dataclasses.field(default_factory=list)
    key_counts: list[pl.DataFrame] = dataclasses.field(default_factory=list)

    def judge_page(self, rows: RowsToScore, page: pl.DataFrame) -> None:
        """Judge `rows` against the leads of `page` (lead_id, SIDES, BLOCKS) sharing one of their keys."""
        # One semi join of the four blocks' keys: an is_in per block built the rows' key set four times a page.
        entries = pl.concat(page.select(key=block_key(b), lead_id="lead_id") for b in BLOCKS).join(
            rows.wanted, on="key", how="semi"
        )
        counts = entries.group_by("key").len()
        self.key_counts.append(counts)
        # A key of more than max_block leads in this page has more in the table; one of fewer may still have more
        # (the pairs it made are dropped at the end, `best_candidates`).
        small = counts.filter(pl.col("len") <= self.scoring.max_block).select("key")
        pairs = entries.join(small, on="key", how="semi").join(rows.keys, on="key")
        if pairs.is_empty():
            return
        # Every lead of the page hashed, then the candidates taken: taking them first gathered all their texts.
        b = page.select("lead_id", *(hashed(side).alias("b" + side) for side in SIDES))
        b = b.join(pairs.select("lead_id").unique(), on="lead_id", how="semi")
        words = {side: words_of([page.get_column(side), rows.words[side].get_column("value")]) for side in WORD_SIDES}
        words |= {"e": rows.words["e"]}
        for start in range(0, pairs.height, PAIRS_PER_JUDGE):
            some = pairs.slice(start, PAIRS_PER_JUDGE).join(rows.sides, on="source_row").join(b, on="lead_id")
            judged = judge(some.with_columns(candidate_row=pl.lit(None, pl.Int64)), words, self.scoring)
            self.judged.append(judged.select(_JUDGED))

    def best_candidates(self, rows: RowsToScore) -> pl.DataFrame:
        """Each of `rows`' best candidate from `review_at` among the live leads and earlier rows, with its score,
        band and verdicts."""
        max_block = self.scoring.max_block
        best = []
        if self.judged:
            counts = pl.concat(self.key_counts).group_by("key").agg(pl.col("len").sum())
            small = counts.filter(pl.col("len") <= max_block).select("key")
            judged = pl.concat(self.judged).join(small, on="key", how="semi")
            best.append(_best(judged.join(rows.sides.select("source_row"), on="source_row", how="semi").drop("key")))
        in_file = _in_file_pairs(rows.keys, max_block)
        a = rows.sides
        b = a.rename({"source_row": "candidate_row", **{"a" + side: "b" + side for side in SIDES}})
        for start in range(0, in_file.height, PAIRS_PER_JUDGE):
            pairs = in_file.slice(start, PAIRS_PER_JUDGE).join(a, on="source_row").join(b, on="candidate_row")
            best.append(_best(judge(pairs, rows.words, self.scoring)))
        if not best:
            return pl.DataFrame(schema=FOUND_SCHEMA)
        found = _best(pl.concat(best, how="diagonal_relaxed")).with_columns(
            band=pl.when(pl.col("score") >= self.scoring.flag_at).then(pl.lit(FLAGGED)).otherwise(pl.lit(REVIEW))
        )
        return found.select(list(FOUND_SCHEMA))


def write_scored(cur: psycopg.Cursor, found: pl.DataFrame) -> None:
    """`scored` (temporary): each row's best candidate from review_at (`best_candidates`), with its reasons."""
    cur.execute(
        """
        CREATE TEMPORARY TABLE scored (
            source_row integer PRIMARY KEY, lead_id bigint, candidate_row integer,
            score real NOT NULL, band text NOT NULL, reasons jsonb NOT NULL
        ) ON COMMIT DROP
        """
    )
    cur.execute(
        "CREATE TEMPORARY TABLE judged (source_row integer, lead_id bigint, candidate_row integer, score real, "
        "band text, first_name text, last_name text, company text, email text, phone text, city text) ON COMMIT DROP"
    )
    copy_frames(cur, sql.Identifier("judged"), list(FOUND_SCHEMA), [found], found.height)
    reasons = sql.SQL(", ").join(sql.SQL("{}, {}").format(sql.Literal(f), sql.Identifier(f)) for f in WEIGHTS)
    cur.execute(
        sql.SQL(
            "INSERT INTO scored (source_row, lead_id, candidate_row, score, band, reasons) "
            "SELECT source_row, lead_id, candidate_row, score, band, jsonb_strip_nulls(jsonb_build_object({})) FROM judged"
        ).format(reasons)
    )
