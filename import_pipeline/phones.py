"""Phone numbers to E.164: polars expressions for the common shapes, the phonenumbers package for the rest.

`e164` decides digits-and-punctuation strings with vectorised regexes built from phonenumbers' own metadata,
following its parse and is_valid_number step by step, so both agree on every such string; anything else
(letters, extensions, unicode digits, tabs...) goes to the library, spread over helper processes when
there are many. Helper processes run this module as `python -m` and import only phonenumbers, so they
start in a fraction of a second.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneMetadata, phonenumberutil

if __name__ != "__main__":  # polars takes most of a second to import, and helper processes never need it
    import polars as pl

# Below this many distinct numbers, starting helpers costs more than it saves (about 50 µs a number).
PARALLEL_FROM = 100_000
# Numbers from many regions otherwise keep recompiling metadata patterns that fell out of the re module's cache
# (twice the cost for US numbers).
phonenumbers.enable_pattern_cache()

# The strings the fast path reads: ASCII digits and the punctuation people type, a `+` only before the
# first digit. None of these characters can start an extension or an RFC 3966 parameter, and all of them
# are punctuation the library skips, so its parse reduces to the digits plus whether there was a `+`.
_SHAPE = r"^[ ().\-/]*\+?[0-9 ().\-/]*$"
_PUNCTUATION = [" ", "(", ")", "-", ".", "/"]
_MAX_INPUT = phonenumberutil._MAX_INPUT_STRING_LENGTH
_MIN_NSN = phonenumberutil._MIN_LENGTH_FOR_NSN
_MAX_NSN = phonenumberutil._MAX_LENGTH_FOR_NSN
_COUNTRY_CODES = sorted(str(code) for code in phonenumberutil.COUNTRY_CODE_TO_REGION_CODE)
# The number types _number_type_helper tries; any match makes a number valid (mobile is added per region).
_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)
# Outcomes of _test_number_length after which parse keeps the number with its national prefix stripped.
_KEEPS_STRIPPED = (phonenumberutil.ValidationResult.IS_POSSIBLE, phonenumberutil.ValidationResult.TOO_LONG)


def e164_numbers(raw_numbers: list[str], region: str) -> dict[str, str]:
    """raw -> E.164 for the numbers phonenumbers parses and finds valid (`region` for local numbers)."""
    e164 = {}
    for raw in raw_numbers:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            e164[raw] = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


def _in_helper(raw_numbers: list[str], region: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "import_pipeline.phones", region],
        input=json.dumps(raw_numbers),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def e164_numbers_parallel(raw_numbers: list[str], region: str) -> dict[str, str]:
    """`e164_numbers` on every core when there are enough numbers: the library is pure Python."""
    workers = min(os.cpu_count() or 1, 8)
    if workers == 1 or len(raw_numbers) < PARALLEL_FROM:
        return e164_numbers(raw_numbers, region)
    chunks = [raw_numbers[i::workers] for i in range(workers)]
    # Helper processes, not multiprocessing: its children re-run the parent's __main__ (the dagster CLI).
    with ThreadPoolExecutor(workers - 1) as pool:
        helpers = [pool.submit(_in_helper, chunk, region) for chunk in chunks[1:]]
        e164 = e164_numbers(chunks[0], region)
        for helper in helpers:
            e164 |= helper.result()
    return e164


def e164(phone: pl.Series, region: str) -> pl.Series:
    """E.164 for each phone that phonenumbers parses and finds valid (`region` for local numbers), else null."""
    phone = phone.cast(pl.String)
    numbers, decided = fast_e164(phone, region)
    undecided = phone.filter(~decided)
    found = e164_numbers_parallel(undecided.unique().to_list(), region) if undecided.len() else {}
    if found:
        looked_up = undecided.replace_strict(list(found), list(found.values()), default=None, return_dtype=pl.String)
        numbers.scatter((~decided).arg_true(), looked_up)
    return numbers


def fast_e164(phone: pl.Series, region: str, min_group: int = 50) -> tuple[pl.Series, pl.Series]:
    """(E.164 or null, decided) per phone without the library; calling codes seen under `min_group` times are left."""
    phone = phone.cast(pl.String)
    n = phone.len()
    numbers = pl.repeat(None, n, dtype=pl.String, eager=True).alias(phone.name)
    decided = pl.repeat(True, n, eager=True).alias("decided")
    rows, undecided = _parsed(phone, region)
    for part in rows.partition_by("cc", "region", as_dict=False) if rows.height else []:
        # Each calling code costs a few milliseconds of fixed work (compiling its patterns among others).
        if part.height < min_group:
            undecided.append(part["i"])
            continue
        found, unknown = _finished(part.select("i", "cand"), part["cc"][0], part["region"][0])
        numbers.scatter(found["i"], found["e164"])
        undecided.append(unknown)
    if undecided:
        decided.scatter(pl.concat(undecided), False)
    return numbers, decided


@dataclass(frozen=True)
class _Plan:
    """What parse and is_valid_number read in one region's metadata, as anchored polars regexes."""

    country_code: int
    general: str | None  # full match: the general description's national number pattern
    general_lengths: tuple[int, ...]
    types: tuple[tuple[tuple[int, ...], str], ...]  # (possible lengths, full match) for each number type
    national_prefix: str | None  # whole match as group 1
    literal_prefix: str | None  # the national prefix when it is plain digits
    prefix_last_group: int  # its last own capturing group, shifted by the wrapping group
    prefix_for_rule: str | None  # without the wrapping group, for the rule's group numbers
    transform: str | None  # national_prefix_transform_rule in polars' replacement syntax
    transform_supported: bool
    idd: str | None  # whole match as group 1
    literal_idd: str | None  # the international prefix when it is plain digits
    keep_lengths: tuple[int, ...]  # lengths at which parse keeps a number stripped of its national prefix
    too_long_lengths: tuple[int, ...]
    leading_digits: str | None  # prefix match


def _full(pattern: str | None) -> str | None:
    return f"^(?:{pattern})$" if pattern else None


def _literal(pattern: str | None) -> str | None:
    return pattern if pattern and re.fullmatch(r"\d+", pattern) else None


@functools.cache
def _plan(country_code: int, region_code: str) -> _Plan | None:
    """The metadata parse and is_valid_number use for this calling code and region, compiled for polars."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region_code)
    if metadata is None:
        return None
    by_lengths: dict[tuple[int, ...], list[str]] = {}
    types = _TYPES if metadata.same_mobile_and_fixed_line_pattern else (*_TYPES, "mobile")
    for name in types:
        desc = getattr(metadata, name)
        if desc is None or not desc.national_number_pattern or tuple(desc.possible_length) == (-1,):
            continue
        by_lengths.setdefault(tuple(desc.possible_length), []).append(desc.national_number_pattern)
    general = metadata.general_desc
    prefix, rule, idd = (
        metadata.national_prefix_for_parsing,
        metadata.national_prefix_transform_rule,
        metadata.international_prefix,
    )
    groups = re.compile(prefix).groups if prefix else 0
    lengths = {length: phonenumberutil._test_number_length("0" * length, metadata) for length in range(_MAX_INPUT + 1)}
    assert metadata.country_code is not None, "every region's metadata has its calling code"
    return _Plan(
        country_code=metadata.country_code,
        general=_full(general.national_number_pattern if general else None),
        general_lengths=tuple(general.possible_length) if general else (),
        types=tuple(
            (lengths_, "^(?:" + "|".join(f"(?:{p})" for p in patterns) + ")$")
            for lengths_, patterns in by_lengths.items()
        ),
        national_prefix=f"^({prefix})" if prefix else None,
        literal_prefix=_literal(prefix) if not rule else None,
        prefix_last_group=groups + 1,
        prefix_for_rule=f"^(?:{prefix})" if prefix else None,
        transform=re.sub(r"\\(\d)", r"${\1}", rule) if rule else None,
        # Python would raise on a rule with no group to test; other rule syntax is left to the library.
        transform_supported=bool(rule) and groups > 0 and re.fullmatch(r"(?:\d|\\\d)*", rule or "") is not None,
        idd=f"^({idd})" if idd else None,
        literal_idd=_literal(idd),
        keep_lengths=tuple(length for length, result in lengths.items() if result in _KEEPS_STRIPPED),
        too_long_lengths=tuple(
            length for length, result in lengths.items() if result == phonenumberutil.ValidationResult.TOO_LONG
        ),
        leading_digits=f"^(?:{metadata.leading_digits})" if metadata.leading_digits is not None else None,
    )


@functools.cache
def _code_of_first_digits() -> dict[str, str]:
    """_extract_country_code as a lookup of the first three digits: the shortest calling code they start with."""
    codes = set(_COUNTRY_CODES)
    heads = {}
    for head in (f"{k:03d}" for k in range(1000)):
        code = next((head[:length] for length in (1, 2, 3) if head[:length] in codes), None)
        if code is not None:
            heads[head] = code
    return heads


def _country_code(digits: pl.Expr) -> pl.Expr:
    """The calling code a string of at least 3 digits starts with, else null."""
    heads = _code_of_first_digits()
    return digits.str.head(3).replace_strict(list(heads), list(heads.values()), default=None, return_dtype=pl.String)


def _main_region(country_code: int) -> str:
    return phonenumberutil.COUNTRY_CODE_TO_REGION_CODE[country_code][0]


def _region_plan(region: str) -> _Plan | None:
    """The default region's metadata, as parse looks it up."""
    metadata = PhoneMetadata.metadata_for_region(region.upper(), None) if region else None
    return _plan(metadata.country_code, region.upper()) if metadata is not None else None


def _matches(expr: pl.Expr, pattern: str | None, lengths: tuple[int, ...] = ()) -> pl.Expr:
    """_is_number_matching_desc: right length (when the description lists lengths) and full pattern match."""
    if pattern is None:
        return pl.lit(False)
    match = expr.str.contains(pattern)
    return expr.str.len_bytes().is_in(lengths) & match if lengths else match


def _any_type(nsn: pl.Expr, plan: _Plan) -> pl.Expr:
    """Some number type of _number_type_helper matches (the general description checked apart)."""
    any_type = pl.lit(False)
    for lengths, pattern in plan.types:
        any_type = any_type | _matches(nsn, pattern, lengths)
    return any_type


def _valid_type(nsn: pl.Expr, plan: _Plan) -> pl.Expr:
    """_number_type_helper(nsn, metadata) != UNKNOWN."""
    return _matches(nsn, plan.general, plan.general_lengths) & _any_type(nsn, plan)


def _after_idd(frame: pl.DataFrame, plan: _Plan | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows of `d` that start with the region's international prefix, as (i, src) with it stripped; the others."""
    if plan is None or plan.idd is None:
        return frame.clear().select("i", pl.col("d").alias("src")), frame
    d = pl.col("d")
    if plan.literal_idd:
        frame = frame.with_columns(pl.when(d.str.starts_with(plan.literal_idd)).then(len(plan.literal_idd)).alias("n"))
    else:
        frame = frame.with_columns(d.str.extract(plan.idd, 1).str.len_bytes().alias("n"))
    frame = frame.with_columns(d.str.slice(pl.col("n").fill_null(0)).alias("after"))
    # An IDD counts only when no 0 follows it, since calling codes never start with 0.
    has_idd = pl.col("n").is_not_null() & ~pl.col("after").str.starts_with("0")
    return frame.filter(has_idd).select("i", pl.col("after").alias("src")), frame.filter(~has_idd).drop("n", "after")


def _strip_prefix(frame: pl.LazyFrame, plan: _Plan) -> pl.LazyFrame:
    """Add to numbers `x` what _maybe_strip_national_prefix_carrier_code leaves (`stripped`), and `unknown`."""
    # Also whether `x` and `stripped` fit the general pattern (`x_fits`, `stripped_fits`), which callers reuse.
    x = pl.col("x")
    if plan.national_prefix is None:
        frame = frame.with_columns(x.alias("stripped"), pl.lit(False).alias("matched"), pl.lit(False).alias("unknown"))
    elif plan.literal_prefix:
        frame = frame.with_columns(
            x.str.starts_with(plan.literal_prefix).alias("matched"),
            x.str.slice(len(plan.literal_prefix)).alias("stripped"),
            pl.lit(False).alias("unknown"),
        )
    else:
        frame = frame.with_columns(x.str.extract(plan.national_prefix, 1).alias("whole"))
        whole = pl.col("whole")
        stripped, unknown = x.str.slice(whole.str.len_bytes()), pl.lit(False)
        if plan.transform is not None:
            # The rule applies only when the prefix's last group took part in the match.
            took_part = x.str.extract(plan.national_prefix, plan.prefix_last_group).is_not_null()
            assert plan.prefix_for_rule is not None, "a transform rule comes with a national prefix"
            stripped = pl.when(took_part).then(x.str.replace(plan.prefix_for_rule, plan.transform)).otherwise(stripped)
            if not plan.transform_supported:
                unknown = whole.is_not_null() & took_part
        frame = frame.with_columns(
            # (an empty number is returned as it is)
            (whole.is_not_null() & (x.str.len_bytes() > 0)).alias("matched"),
            stripped.alias("stripped"),
            unknown.alias("unknown"),
        ).drop("whole")
    frame = frame.with_columns(
        _matches(x, plan.general).alias("x_fits"), _matches(pl.col("stripped"), plan.general).alias("stripped_fits")
    )
    # A number that fit the general pattern is kept whole if stripping breaks the fit.
    keep_whole = ~pl.col("matched") | (pl.col("x_fits") & ~pl.col("stripped_fits"))
    return frame.with_columns(
        pl.when(keep_whole).then(x).otherwise("stripped").alias("stripped"),
        pl.when(keep_whole).then("x_fits").otherwise("stripped_fits").alias("stripped_fits"),
    ).drop("matched")


def _shaped(phone: pl.Series) -> tuple[pl.DataFrame, pl.Series]:
    """(i, s, d: digits, plus) of the viable numbers of the fast path's shape, and the rows out of its shape."""
    s, d = pl.col("s"), pl.col("d")
    frame = pl.DataFrame({"s": phone}).with_row_index("i").filter(s.is_not_null())
    frame = frame.with_columns(s.str.contains(_SHAPE).alias("shape"))
    outside = frame.filter(~pl.col("shape"))["i"]
    # In this shape a `+` comes before every digit, so it is left first once the punctuation is gone.
    digits = s.str.replace_many(_PUNCTUATION, [""] * len(_PUNCTUATION))
    frame = frame.filter("shape").select("i", "s", digits.alias("d"))
    frame = frame.with_columns(d.str.starts_with("+").alias("plus")).with_columns(d.str.strip_chars_start("+"))
    # _is_viable_phone_number on what _extract_possible_number keeps: 3 digits, or exactly 2 together.
    pairs = frame.filter((d.str.len_bytes() == 2) & ~pl.col("plus")).filter(s.str.contains("[0-9]{2}"))
    return pl.concat([frame.filter(d.str.len_bytes() >= 3), pairs]), outside


def _parsed(phone: pl.Series, region: str) -> tuple[pl.DataFrame, list[pl.Series]]:
    """parse up to the national prefix: (i, cc, region, cand) per row that may be valid, and the undecided rows."""
    # `region` names the metadata parse finishes with, `cand` is the national number before its national prefix
    # is stripped. Rows in neither result are null.
    plan = _region_plan(region)
    region_known = region in phonenumberutil.SUPPORTED_REGIONS
    if not region_known and (plan is not None or region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY):
        # A lower-case or odd region code leads parse down paths not worth mirroring.
        return pl.DataFrame(), [phone.is_not_null().arg_true().cast(pl.UInt32)]
    frame, outside = _shaped(phone)
    d = pl.col("d")
    # Without a known default region, only numbers with a `+` get past _check_region_for_parsing.
    frame = frame.filter((pl.col("s").str.len_bytes() <= _MAX_INPUT) & (pl.col("plus") | region_known))
    plus = frame.filter("plus").with_columns(_country_code(d).alias("code"))
    # A `+` before an unknown calling code: parse tries again as if the `+` were not there.
    plus_idd, _ = _after_idd(plus.filter(pl.col("code").is_null()), plan)
    home_idd, home = _after_idd(frame.filter(~pl.col("plus")), plan)
    abroad = pl.concat([plus.filter(pl.col("code").is_not_null()).select("i", d.alias("src")), plus_idd, home_idd])
    abroad = abroad.filter(pl.col("src").str.len_bytes() > _MIN_NSN)
    abroad = abroad.with_columns(_country_code(pl.col("src")).alias("code"))
    abroad = _with_regions(
        abroad.filter(pl.col("code").is_not_null()).select(
            "i",
            pl.col("code").cast(pl.Int64).alias("cc"),
            pl.col("src").str.slice(pl.col("code").str.len_bytes()).alias("cand"),
        )
    )
    if plan is None:
        return abroad, [outside]
    # Starting with the region's own calling code: parse drops it if that fixes a wrong pattern or length.
    code = str(plan.country_code)
    starting = home.lazy().filter(d.str.starts_with(code)).with_columns(d.str.slice(len(code)).alias("x"))
    starts = (
        _strip_prefix(starting, plan)
        .with_columns(
            (
                (~_matches(d, plan.general) & pl.col("stripped_fits")) | d.str.len_bytes().is_in(plan.too_long_lengths)
            ).alias("dropped")
        )
        .collect()
    )
    undecided = starts.filter("unknown")["i"]
    starts = starts.filter(~pl.col("unknown"))
    dropped = starts.filter("dropped").select(
        "i", pl.lit(plan.country_code, dtype=pl.Int64).alias("cc"), pl.col("stripped").alias("cand")
    )
    local = pl.concat([home.filter(~d.str.starts_with(code)), starts.filter(~pl.col("dropped"))], how="diagonal")
    local = local.select(
        "i",
        pl.lit(plan.country_code, dtype=pl.Int64).alias("cc"),
        pl.lit(region.upper()).alias("region"),
        d.alias("cand"),
    )
    return pl.concat([abroad, _with_regions(dropped), local]), [outside, undecided]


def _with_regions(rows: pl.DataFrame) -> pl.DataFrame:
    """Add the region whose metadata parse finishes with for a calling code it found: the code's main one."""
    codes = rows["cc"].unique().to_list()
    # (replace_strict keeps the input's type when there is nothing to replace)
    region = pl.col("cc").replace_strict(codes, [_main_region(code) for code in codes]) if codes else pl.lit(None)
    return rows.select("i", "cc", region.cast(pl.String).alias("region"), "cand")


def _finished(rows: pl.DataFrame, cc: int, region_code: str) -> tuple[pl.DataFrame, pl.Series]:
    """The rest of parse then is_valid_number for one calling code and metadata: (i, e164) if valid, undecided."""
    plan = _plan(cc, region_code)
    assert plan is not None, f"no metadata for +{cc} {region_code}"
    x = pl.col("x")
    # Lazy, so that a calling code with a handful of numbers costs one query rather than a dozen.
    stripped = _strip_prefix(rows.lazy().select("i", pl.col("cand").alias("x")), plan)
    # The stripped number is kept only if its length is possible; otherwise the candidate stays whole.
    kept = pl.col("stripped").str.len_bytes().is_in(plan.keep_lengths)
    rows = stripped.select(
        "i",
        "unknown",
        pl.when(kept).then("stripped").otherwise(x).alias("nsn"),
        pl.when(kept).then("stripped_fits").otherwise("x_fits").alias("fits"),
        (x.str.len_bytes() >= _MIN_NSN).alias("long_enough"),
    ).collect()
    undecided = rows.filter("unknown")["i"]
    nsn = pl.col("nsn")
    rows = rows.filter(~pl.col("unknown") & pl.col("long_enough") & (nsn.str.len_bytes() <= _MAX_NSN))
    regions = phonenumberutil.COUNTRY_CODE_TO_REGION_CODE[cc]
    if len(regions) == 1 and _plan(cc, regions[0]) is plan:
        # The general pattern was already matched while parsing.
        valid: pl.Expr | pl.Series = (
            pl.col("fits") & nsn.str.len_bytes().is_in(plan.general_lengths) & _any_type(nsn, plan)
        )
    else:
        valid = _is_valid(rows["nsn"], cc)
    found = rows.lazy().filter(valid).select("i", pl.concat_str(pl.lit(f"+{cc}"), "nsn").alias("e164")).collect()
    return found, undecided


def _is_valid(nsn: pl.Series, cc: int) -> pl.Series:
    """is_valid_number for national significant numbers of one calling code."""
    regions = phonenumberutil.COUNTRY_CODE_TO_REGION_CODE[cc]
    frame = nsn.alias("nsn").to_frame()
    if len(regions) == 1:
        plan = _plan(cc, regions[0])
        return frame.select(_valid_type(pl.col("nsn"), plan) if plan else pl.repeat(False, frame.height)).to_series()
    # region_code_for_number: the first region whose leading digits match, or (with none listed) where the
    # number is valid; then valid for that region. A number fitting no region's general pattern is invalid
    # wherever it lands, which settles most invalid numbers in one pass.
    plans = [plan for plan in (_plan(cc, region_code) for region_code in regions) if plan is not None]
    general = [plan.general for plan in plans if plan.general]
    valid = pl.repeat(False, len(nsn), eager=True)
    if not general:
        return valid
    pending = frame.with_row_index("k").filter(pl.col("nsn").str.contains("|".join(f"(?:{p})" for p in general)))
    # A number no leading digits match lands in the first region without leading digits where it is valid.
    leading = [plan.leading_digits for plan in plans if plan.leading_digits is not None]
    is_special = pl.col("nsn").str.contains("|".join(leading)) if leading else pl.lit(False)
    pending = pending.with_columns(is_special.alias("special"))
    plain = pending.filter(~pl.col("special"))
    for plan in plans:
        if plan.leading_digits is None and plain.height:
            plain = plain.with_columns(_valid_type(pl.col("nsn"), plan).alias("here"))
            valid.scatter(plain.filter("here")["k"], True)
            plain = plain.filter(~pl.col("here"))
    special = pending.filter("special")
    if special.height == 0:
        return valid
    # The others: the region each lands in, in the library's order, then whether it is valid there.
    landing = pl.lit(None, dtype=pl.Int64)
    for index in reversed(range(len(plans))):
        plan = plans[index]
        here = (
            pl.col("nsn").str.contains(plan.leading_digits)
            if plan.leading_digits is not None
            else _valid_type(pl.col("nsn"), plan)
        )
        landing = pl.when(here).then(index).otherwise(landing)
    special = special.with_columns(landing.alias("landing")).filter(pl.col("landing").is_not_null())
    for part in special.partition_by("landing", as_dict=False):
        plan = plans[part["landing"][0]]
        if plan.leading_digits is None:  # landed there for being valid there
            valid.scatter(part["k"], True)
        else:
            valid.scatter(part["k"], part.select(_valid_type(pl.col("nsn"), plan)).to_series())
    return valid


if __name__ == "__main__":
    json.dump(e164_numbers(json.load(sys.stdin), sys.argv[1]), sys.stdout)
