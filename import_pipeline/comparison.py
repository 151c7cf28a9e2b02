"""What a lead or a staged row looks like to possible-duplicate scoring: its values normalized for fuzzy
comparison (`SIDES`) and its blocking keys (`BLOCKS`), computed with polars for a whole frame at once.

One definition for both sides of a pair: the live leads' values (kept in `lead_comparison`) and the
incoming rows' come from `comparison_values`, so a lead the application wrote compares exactly like an
imported one. Only a name's sound comes from the database (fuzzystrmatch's `dmetaphone`, once per distinct
name).
"""

import polars as pl
import psycopg
from psycopg import sql

from import_pipeline import schema
from import_pipeline.staging import copy_frames, read_frame

# What the values are computed from, of a lead or a staged row (`email_key`: the match key's email).
INPUT_COLUMNS = ("first_name", "last_name", "company_name", "email_key", "phone_e164", "phone", "city")
# The same of a file's row (besides its phone_e164): its email's key comes from the database's lead_email_key.
COMPARED_FIELDS = ("first_name", "last_name", "company_name", "email", "phone", "city")
# Each side's values as the verdicts compare them: first name, last name and its sound, company without
# legal forms, email local part and domain, phone digits, city.
SIDES = ("f", "l", "ls", "c", "e", "d", "p", "y")
# Together they find a person again under another email: by surname (its sound), company and first initial
# (without the initial, namesakes at common companies made 1.22 of the 2.49 million pairs of 100,000 rows at 1M
# leads, for 0.5% of the duplicates found), by company, first name (its sound) and surname initial (a typo that
# changes a surname's sound mostly keeps its first letter; without the initial, colleagues sharing a first name
# made most pairs: 562,527 for 20,000 rows), by phone, by the email's local part.
BLOCKS = ("block_name_company", "block_company_first_initial", "block_phone", "block_email_local")

# Local parts that name a role, not a person: the same `info@` at two companies says nothing.
ROLE_LOCAL_PARTS = (
    "info", "contact", "sales", "admin", "hello", "office", "support", "marketing", "team", "mail", "noreply",
    "enquiries", "accounts", "billing", "hr", "jobs", "press", "service", "webmaster",
)  # fmt: skip
# Words of a company's name that say nothing of which company it is: migration 11's list, with the word
# boundaries of polars' regular expressions.
LEGAL_FORMS = schema.LEGAL_FORMS.replace(r"\m", r"\b").replace(r"\M", r"\b")


def _nonempty(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr != "").then(expr)


def fuzzy_text(column: str) -> pl.Expr:
    """Lower case, accents dropped (NFKD, then the combining marks), punctuation as single spaces."""
    lowered = pl.col(column).str.to_lowercase()
    # ASCII text skips the normalization (most names: measured about 3x faster on 1M leads).
    plain = (
        pl.when(lowered.str.contains(r"[^ -~]"))
        .then(lowered.str.normalize("NFKD").str.replace_all(r"\p{Mn}+", ""))
        .otherwise(lowered)
    )
    return _nonempty(plain.str.replace_all(r"[^\p{L}\p{N}]+", " ").str.strip_chars(" "))


def by_database(cur: psycopg.Cursor, values: pl.Series, function: str) -> tuple[pl.Series, pl.Series]:
    """The distinct values of `values` and what the database's `function` gives each (values it gives null or ''
    are left out), through COPY both ways: as a Python dict, the email keys of 100,000 rows took 0.9 s and
    145 MB."""
    cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS by_database (v text)")
    cur.execute("TRUNCATE by_database")
    distinct = values.drop_nulls().unique().to_frame("v")
    copy_frames(cur, sql.Identifier("by_database"), ["v"], [distinct], distinct.height)
    query = sql.SQL("SELECT v, r FROM (SELECT v, NULLIF({}(v), '') AS r FROM by_database) x WHERE r IS NOT NULL")
    found = read_frame(cur, query.format(sql.Identifier(function)), {"v": pl.String, "r": pl.String})
    return found.get_column("v"), found.get_column("r")


def comparison_values(cur: psycopg.Cursor, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its INPUT_COLUMNS replaced by SIDES and BLOCKS (other columns kept)."""
    fuzzy = frame.with_columns(
        f=fuzzy_text("first_name"), l=fuzzy_text("last_name"), company=fuzzy_text("company_name"), y=fuzzy_text("city")
    )
    names, sound = by_database(cur, pl.concat([fuzzy.get_column("f"), fuzzy.get_column("l")]), "dmetaphone")
    local = pl.col("email_key").str.split("@").list.first().str.split("+").list.first()
    digits = pl.coalesce("phone_e164", "phone").str.replace_all(r"[^0-9]", "")
    values = fuzzy.with_columns(
        ls=pl.col("l").replace_strict(names, sound, default=None, return_dtype=pl.String),
        fs=pl.col("f").replace_strict(names, sound, default=None, return_dtype=pl.String),
        c=_nonempty(pl.col("company").str.replace_all(LEGAL_FORMS, "").str.replace_all(" ", "", literal=True)),
        e=_nonempty(local.str.replace_all(r"[^\p{L}\p{N}]", "")),
        d=pl.col("email_key").str.split("@").list.get(1, null_on_oob=True),
        p=pl.when(digits.str.len_chars() >= 7).then(digits.str.slice(-9)),
        word=_nonempty(pl.col("company").str.replace(r"^the ", "").str.split(" ").list.first()),
    )
    return values.with_columns(
        block_name_company=pl.concat_str("ls", "word", pl.col("f").str.head(1), separator="|"),
        block_company_first_initial=pl.concat_str("word", "fs", pl.col("l").str.head(1), separator="|"),
        block_phone=pl.col("p"),
        block_email_local=pl.when((pl.col("e").str.len_chars() >= 4) & ~pl.col("e").is_in(ROLE_LOCAL_PARTS)).then(
            pl.col("e")
        ),
    ).drop("company", "word", "fs", *INPUT_COLUMNS)


# The sides whose values a verdict reads beyond equality (typos, nicknames, similar companies): kept as words.
WORD_SIDES = ("f", "l", "c")


def hashed(column: str) -> pl.Expr:
    """A value as scoring carries it: its 64-bit hash, null when missing. Pairs compare, deduplicate and join on
    numbers (an import of 100,000 rows at 1M leads peaked 60 to 90 MB lower than with the values themselves,
    as fast). Two different values sharing a hash would be judged the same: an import of 1.1 million pairs
    compares about 10^7 values, for odds of about 1 in 10^12. Words stand behind the hashes where a verdict
    needs the values (WORD_SIDES)."""
    return pl.when(pl.col(column).is_not_null()).then(pl.col(column).hash())


def block_key(block: str) -> pl.Expr:
    """A blocking key as a 64-bit hash, of its own block's (a collision only adds a pair, judged on its values);
    null when the key is."""
    return pl.when(pl.col(block).is_not_null()).then(pl.col(block).hash(seed=BLOCKS.index(block)))


def words_of(values: list[pl.Series]) -> pl.DataFrame:
    """(value, hash) of the distinct values among `values`: what the `hashed` values stand for."""
    distinct = pl.concat(values).drop_nulls().unique() if values else pl.Series([], dtype=pl.String)
    return distinct.to_frame("value").with_columns(hash=hashed("value"))
