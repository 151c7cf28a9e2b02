"""Phone numbers to E.164: the vectorised fast path gives exactly the phonenumbers library's answers."""

import functools
import json
import multiprocessing
import random
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import phonenumbers
import polars as pl
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType, phonenumberutil

from import_pipeline import phones

REGIONS = ("US", "FR", "GB", "DE", "IT", "BR", "IN", "AR", "MX", "JP", "ZZ")
LOOKALIKE_REGIONS = ("US", "CA", "GB", "FR", "DE", "IT", "ES", "BR", "IN", "AU", "JP", "AR", "MX")
CORPUS_SIZE = 20_000


def library(raws: list[str | None], region: str) -> list[str | None]:
    """The library's answer for each string: parse, then is_valid_number, then E.164."""
    answers = []
    for raw in raws:
        try:
            number = phonenumbers.parse(raw, region) if raw is not None else None
        except phonenumbers.NumberParseException:
            number = None
        valid = number is not None and phonenumbers.is_valid_number(number)
        answers.append(phonenumbers.format_number(number, PhoneNumberFormat.E164) if valid else None)
    return answers


@functools.cache
def _example(region: str, kind: int) -> tuple[int, str]:
    """A region's example number of a type (or its main example): calling code and national number."""
    example = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    return example.country_code, phonenumbers.national_significant_number(example)


def _example_digits(rng: random.Random) -> tuple[int, str]:
    """A calling code and national number near a real example: some valid, many a digit or two off."""
    kind = rng.choice(
        [
            PhoneNumberType.FIXED_LINE,
            PhoneNumberType.MOBILE,
            PhoneNumberType.TOLL_FREE,
            PhoneNumberType.PREMIUM_RATE,
            PhoneNumberType.VOIP,
            PhoneNumberType.UAN,
        ]
    )
    cc, nsn = _example(rng.choice(LOOKALIKE_REGIONS), kind)
    keep = rng.randint(max(1, len(nsn) - 6), len(nsn))
    nsn = nsn[:keep] + "".join(rng.choice("0123456789") for _ in range(len(nsn) - keep))
    if rng.random() < 0.15:
        nsn = nsn + rng.choice("0123456789") if rng.random() < 0.5 else nsn[:-1]
    return cc, nsn


def _punctuated(digits: str, rng: random.Random) -> str:
    """Digits written the way people type them: groups split by spaces, dashes, dots, slashes, parentheses."""
    style = rng.random()
    if style < 0.3:
        return digits
    out = []
    for k, digit in enumerate(digits):
        if k and rng.random() < 0.3:
            out.append(rng.choice([" ", "-", ".", "/", " - ", ") ", "(", ".", "  "]))
        out.append(digit)
    text = "".join(out)
    return f"({text[:3]}) {text[3:]}" if style > 0.9 else text


def _lookalike(rng: random.Random) -> str:
    """A number written nationally, internationally or with an international prefix, in some format."""
    cc, nsn = _example_digits(rng)
    number = phonenumbers.PhoneNumber(country_code=cc, national_number=int(nsn))
    if nsn.startswith("0") and len(nsn) > 1:
        number.italian_leading_zero = True
        zeros = len(nsn) - len(nsn.lstrip("0"))
        number.number_of_leading_zeros = min(zeros, len(nsn) - 1) if zeros > 1 else None
    form = rng.random()
    if form < 0.25:
        return phonenumbers.format_number(
            number, rng.choice([PhoneNumberFormat.NATIONAL, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.E164])
        )
    prefix = rng.choice(["", "", "0", "1", "+", "+", "00", "011", "+0", "0 ", "(0)", "15", "9"])
    middle = rng.choice(["", str(cc), str(cc), str(cc) + " 0", str(cc) + " (0)"]) if prefix not in ("", "0") else ""
    return prefix + _punctuated(middle + nsn, rng)


def _random_digits(rng: random.Random) -> str:
    """Digits of any length 3 to 17 with or without an international or national prefix."""
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 17)))
    return rng.choice(["", "", "", "+", "00", "011", "0", "1", "+1", "+0"]) + _punctuated(digits, rng)


def _junk(rng: random.Random) -> str:
    """What else lands in a phone column."""
    cc, nsn = _example_digits(rng)
    return rng.choice(
        [
            "",
            " ",
            "   ",
            "+",
            "++",
            "-",
            "()",
            "n/a",
            "none",
            "tbd",
            "+ ",
            "0",
            "00",
            "12",
            "1 2",
            "+12",
            "(12)",
            f"+{cc} {nsn} ext. 12",
            f"{nsn} x123",
            f"{nsn} #45",
            f"tel:+{cc}-{nsn}",
            f"+{cc}{nsn};ext=7",
            f"Tel: +{cc} {nsn}",
            f"+{cc} {nsn}\t",
            f"\u00a0+{cc} {nsn}",
            f"+{cc}\u2011{nsn}",
            f"{nsn[:3]}abc{nsn[3:]}",
            "".join(chr(0xFF10 + int(c)) for c in nsn),
            "".join(chr(0x0660 + int(c)) for c in nsn),
            f"\uff0b{cc}{nsn}",
            "1-800-FLOWERS",
            f"+{cc} {nsn} / +{cc} {nsn}",
            f"{nsn}+{cc}",
            f"+{cc}+{nsn}",
            "9" * rng.randint(18, 30),
            "1" * 251,
            " " * 260 + "0659697912",
            f"+{cc} " + "0" * 20,
            "+" + nsn[:2],
            f"0{nsn}",
            f"({nsn})",
            f"-{nsn}-",
            f"/{nsn}.",
            f"+{cc}-{nsn}.",
        ]
    )


def _corpus(seed: int, size: int) -> list[str | None]:
    """Phone strings of many shapes, with nulls and repeats."""
    rng = random.Random(seed)
    makers = [(_lookalike, 0.45), (_random_digits, 0.4), (_junk, 0.15)]
    corpus = [rng.choices([m for m, _ in makers], [w for _, w in makers])[0](rng) for _ in range(size)]
    corpus += [None] * 20 + corpus[:200]
    rng.shuffle(corpus)
    return corpus


@pytest.fixture(scope="module")
def pool():
    """Two processes for the library's answers, which cost about 50 µs a string."""
    # Spawned, not forked: this process already runs polars' threads.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.fixture(scope="module")
def corpus_answers(pool) -> tuple[list[str | None], dict[str, list[str | None]]]:
    """A seeded corpus and the library's answers to it for each default region."""
    corpus = _corpus(seed=20240611, size=CORPUS_SIZE)
    return corpus, dict(zip(REGIONS, pool.map(library, [corpus] * len(REGIONS), REGIONS), strict=True))


@pytest.mark.parametrize("region", REGIONS)
def test_e164_randomized_corpus(corpus_answers, region):
    """On a randomized corpus of many shapes, e164 gives the library's answer for every string."""
    corpus, answers = corpus_answers
    got = phones.e164(pl.Series("phone", corpus, dtype=pl.String), region)
    assert got.len() == len(corpus)
    wrong = [
        (raw, mine, theirs)
        for raw, mine, theirs in zip(corpus, got.to_list(), answers[region], strict=True)
        if mine != theirs
    ]
    assert wrong == []


def test_fast_e164_randomized_corpus_every_group(corpus_answers):
    """Decided by the fast path down to single numbers of rare calling codes, answers stay the library's."""
    corpus, answers = corpus_answers
    numbers, decided = phones.fast_e164(pl.Series(corpus, dtype=pl.String), "US", min_group=1)
    wrong = [
        (raw, mine, theirs)
        for raw, mine, theirs, fast in zip(corpus, numbers.to_list(), answers["US"], decided.to_list(), strict=True)
        if fast and mine != theirs
    ]
    assert wrong == []
    # What is left to the library is what the fast path cannot read: letters, unicode, tabs, extensions.
    assert decided.mean() > 0.85


def _example_strings(region: str) -> list[str]:
    """Every example number of a region, in the library's formats and as bare digits."""
    strings = []
    for kind in phonenumberutil.PhoneNumberType.values():
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        for form in (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL):
            strings.append(phonenumbers.format_number(example, form))
        nsn = phonenumbers.national_significant_number(example)
        strings += [nsn, nsn[:-1], nsn + "5", f"00{example.country_code}{nsn}", f"{example.country_code}{nsn}"]
    return strings


def _tricky_regions() -> list[str]:
    """Regions whose parse and validation take the intricate paths: prefix transform rules, shared calling codes."""
    tricky = []
    for region in sorted(phonenumberutil.SUPPORTED_REGIONS):
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        shared = len(phonenumberutil.COUNTRY_CODE_TO_REGION_CODE[metadata.country_code]) > 1
        if metadata.national_prefix_transform_rule or shared:
            tricky.append(region)
    return tricky


HANDPICKED = [
    "+0033 6 59 69 79 12",
    "+011 33 6 59 69 79 12",
    "0033659697912",
    "011 33 6 59 69 79 12",
    "00 0 33 6 59 69 79 12",
    "33 6 59 69 79 12",
    "33659697912",
    "+33 (0)6 59 69 79 12",
    "+33 0659697912",
    "1 650 253 0000",
    "16502530000",
    "+1 (650) 253-0000",
    "650.253.0000",
    "1-800-123-4567",
    "+1 268 464 1234",
    "268 464 1234",
    "(787) 123-4567",
    "+44 1624 456789",
    "+44 7700 900123",
    "07700 900123",
    "0044 20 7946 0958",
    "+7 701 123 4567",
    "8 701 123 4567",
    "+39 06 698 12345",
    "06 698 12345",
    "+39 0 6 698",
    "011 15 1234 5678",
    "0 11 15-1234-5678",
    "+54 9 11 1234 5678",
    "(11) 98765-4321",
    "0 21 11 98765 4321",
    "+55 11 98765 4321",
    "03-1234-5678",
    "090-1234-5678",
    "+81 90 1234 5678",
    "044 55 1234 5678",
    "+52 1 55 1234 5678",
    "+52 55 1234 5678",
    "+91 98765 43210",
    "098765 43210",
    "+61 4 1234 5678",
    "0011 61 4 1234 5678",
    "+49 (0)30 123456",
    "030 123456",
    "0049 30 123456",
    "+800 1234 5678",
    "+882 1234 5678",
    "+262 269 12 34 56",
    "+590 590 12 34 56",
    "0 8 00",
    "00",
    "0000000000",
    "+1",
    "+12",
    "+999 123 456 789",
]


@pytest.mark.parametrize("region", [*REGIONS, "CA", "IM", "AG", "KZ", "VA"])
def test_fast_e164_handpicked_numbers(region):
    """Numbers picked for parse's side roads are all decided fast, and as the library decides them."""
    # IDD after a `+`, the region's own calling code without `+`, national prefixes kept or dropped, regions
    # sharing a calling code, carrier codes, transform rules.
    numbers, decided = phones.fast_e164(pl.Series(HANDPICKED), region, min_group=1)
    assert decided.all()
    assert numbers.to_list() == library(HANDPICKED, region)


def test_fast_e164_example_numbers_every_region(pool):
    """Every region's example numbers under US, and national ones under their own region where parse is intricate."""
    international = [s for region in sorted(phonenumberutil.SUPPORTED_REGIONS) for s in _example_strings(region)]
    for code in phonenumberutil.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            international.append(phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL))
    checks = [(international, "US")]
    checks += [(_example_strings(region), region) for region in _tricky_regions()]
    expected = list(pool.map(library, *zip(*checks, strict=True)))
    for (strings, region), theirs in zip(checks, expected, strict=True):
        numbers, decided = phones.fast_e164(pl.Series(strings, dtype=pl.String), region, min_group=1)
        wrong = [
            (region, raw, mine, answer)
            for raw, mine, answer, fast in zip(strings, numbers.to_list(), theirs, decided.to_list(), strict=True)
            if fast and mine != answer
        ]
        assert wrong == []
        # Example numbers are plain digits and punctuation: the fast path itself decides them (all, measured).
        assert decided.mean() > 0.95, region
    assert len(checks) > 50


def _benchmark_like(rows: int) -> pl.Series:
    """French mobile numbers written as the benchmark's generator writes them."""
    h = pl.int_range(0, rows, dtype=pl.Int64, eager=True).hash(2)
    return pl.select(pl.format("0{}", 600_000_000 + h % 99_999_999)).to_series().alias("Phone")


@pytest.mark.parametrize("region", ["US", "FR"])
def test_fast_e164_benchmark_numbers_decided(region):
    """The fast path decides the benchmark's numbers itself, valid (FR) or not (US), and as the library."""
    local = _benchmark_like(20_000)
    written = pl.concat(
        [
            local,
            local.str.replace(r"^0(\d)(\d\d)(\d\d)(\d\d)(\d\d)$", "0$1 $2 $3 $4 $5"),
            local.str.replace(r"^0", "+33 "),
            local.str.replace(r"^0(\d\d\d)(\d\d\d)(\d\d\d)$", "($1) $2-$3"),
        ]
    )
    numbers, decided = phones.fast_e164(written, region)
    assert decided.mean() >= 0.95
    sample = written.gather(list(range(0, written.len(), 97)))
    assert phones.e164(sample, region).to_list() == library(sample.to_list(), region)
    valid = numbers.head(local.len()).is_not_null().mean()
    assert valid > 0.9 if region == "FR" else valid == 0


def test_e164_keeps_length_order_and_nulls():
    """One answer per input, in order, null for nulls and junk, the same for repeats."""
    phone = pl.Series(
        "phone", [None, "06 59 69 79 12", "junk", "+1 650-253-0000 ext. 12", "0659697912", None, "06 59 69 79 12"]
    )
    assert phones.e164(phone, "FR").to_list() == [
        None,
        "+33659697912",
        None,
        "+16502530000",
        "+33659697912",
        None,
        "+33659697912",
    ]


def test_e164_empty_series():
    """No phones, no answers."""
    assert phones.e164(pl.Series([], dtype=pl.String), "US").to_list() == []


def test_e164_leaves_unreadable_shapes_to_library(monkeypatch):
    """Extensions, letters and unicode digits are not decided fast, and helper processes answer them."""
    raw = [
        "+1 650-253-0000 ext. 12",
        "650 253 0000 x9",
        "1-800-FLOWERS",
        "\uff16\uff15\uff10 253 0000",
        "tel:+16502530000",
    ]
    _, decided = phones.fast_e164(pl.Series(raw), "US")
    assert not decided.any()
    monkeypatch.setattr(phones, "PARALLEL_FROM", 1)
    assert phones.e164(pl.Series(raw * 3), "US").to_list() == library(raw * 3, "US")


def test_e164_region_in_lower_case():
    """A region code the library treats as unknown for local numbers gets the library's answers."""
    raw = ["6502530000", "+1 650 253 0000", "+33 6 59 69 79 12", "0659697912"]
    assert phones.e164(pl.Series(raw), "us").to_list() == library(raw, "us")


def test_helper_mode_without_polars():
    """`python -m import_pipeline.phones REGION` answers JSON on stdin and never imports polars."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "import_pipeline.phones", "FR"],
        input=json.dumps(["06 59 69 79 12", "junk", "+1 650 253 0000"]),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == {"06 59 69 79 12": "+33659697912", "+1 650 253 0000": "+16502530000"}
    assert "polars" not in done.stderr
