"""Parse: read a landed file as text, map its headers to the canonical lead fields, number its lines."""

import re
import time
import unicodedata
from pathlib import Path

import dagster as dg
import polars as pl

from import_pipeline.config import ParseConfig
from import_pipeline.landing import content_hash, find_landed_file, hash_of_key
from import_pipeline.resources import LandingFolder
from import_pipeline.schema import CANONICAL_FIELDS

SOURCE_ROW = "source_row"
EXTRA_PREFIX = "extra."

# Normalized header -> canonical field. Keys are what `normalize_header` returns.
ALIASES: dict[str, str] = {
    alias: field
    for field, aliases in {
        "company_name": (
            "company", "company name", "companyname", "organization", "organisation", "organization name",
            "account", "account name", "business", "business name", "employer", "societe", "raison sociale",
            "entreprise", "nom de l entreprise",
        ),
        "first_name": ("first name", "firstname", "first", "given name", "fname", "prenom"),
        "last_name": ("last name", "lastname", "last", "surname", "family name", "lname", "nom", "nom de famille"),
        "email": (
            "email", "e mail", "email address", "e mail address", "mail", "work email", "business email",
            "email 1", "courriel", "adresse email", "adresse e mail", "adresse mail",
        ),
        "phone": (
            "phone", "phone number", "telephone", "telephone number", "tel", "mobile", "mobile phone",
            "work phone", "phone 1", "direct phone", "numero de telephone", "portable",
        ),
        "title": ("title", "job title", "position", "role", "poste", "fonction", "titre"),
        "industry": ("industry", "sector", "secteur", "secteur d activite", "industrie"),
        "company_website": (
            "website", "company website", "web site", "url", "website url", "company url", "domain",
            "company domain", "site web", "site internet",
        ),
        "city": ("city", "town", "ville", "commune"),
        "state": ("state", "region", "province", "state province", "state region", "departement"),
        "country": ("country", "country region", "pays"),
        "external_id": ("external id", "id", "record id", "lead id", "contact id", "identifiant"),
        "notes": ("notes", "note", "comments", "comment", "description", "remarks", "commentaire", "commentaires"),
    }.items()
    for alias in (field.replace("_", " "), *aliases)
}


class FileRejected(Exception):
    """The whole file cannot be imported; the message says why, in the user's terms."""


def normalize_header(header: str) -> str:
    """Lower-case, accent-free, punctuation-free header text: `" Prénom_1 "` -> `"prenom 1"`."""
    decomposed = unicodedata.normalize("NFKD", header.replace("\ufeff", ""))
    ascii_text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[^a-z0-9]+", " ", ascii_text.lower()).strip()


def map_headers(headers: list[str]) -> dict[str, str]:
    """Source header -> canonical field for every header the alias table knows."""
    mapping: dict[str, str] = {}
    claimed: dict[str, str] = {}
    for header in headers:
        field = ALIASES.get(normalize_header(header))
        if field is None:
            continue
        if field in claimed:
            raise FileRejected(f"columns {claimed[field]!r} and {header!r} both map to the field {field!r}")
        claimed[field] = header
        mapping[header] = field
    if "company_name" not in claimed:
        raise FileRejected(f"no column maps to company_name; the headers found are {headers}")
    return mapping


def _read_text_table(path: Path) -> pl.DataFrame:
    """Every cell as text, exactly as written: no type inference, so leading zeros survive."""
    try:
        return pl.read_csv(path, infer_schema=False, has_header=True, raise_if_empty=True)
    except pl.exceptions.NoDataError as e:
        raise FileRejected("the file is empty") from e
    except pl.exceptions.ComputeError as e:
        raise FileRejected(f"the file is not a readable CSV: {str(e).splitlines()[0]}") from e


def read_leads(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """The file's records as text columns named for canonical fields, each with its source line number.

    Unmapped columns are kept as `extra.<header>`. Blank records are dropped (they are not leads).
    Returns the frame and the mapping used (source header -> column name).
    """
    raw = _read_text_table(path)
    if raw.height == 0:
        raise FileRejected("the file has a header but no records")
    headers = raw.columns
    fields = map_headers(headers)
    mapping = {h: fields.get(h, EXTRA_PREFIX + h) for h in headers}

    # A person counts lines including the newlines quoted inside earlier records.
    header_lines = 1 + sum(h.count("\n") for h in headers)
    newlines = pl.sum_horizontal(pl.col(h).str.count_matches("\n", literal=True).fill_null(0) for h in headers)
    trimmed = [pl.col(h).str.strip_chars().replace("", None).alias(mapping[h]) for h in headers]
    frame = (
        raw.lazy()
        .select(
            (header_lines + 1 + pl.int_range(pl.len()) + newlines.cum_sum().shift(1, fill_value=0)).alias(SOURCE_ROW),
            *trimmed,
        )
        .filter(pl.any_horizontal(pl.exclude(SOURCE_ROW).is_not_null()))
        .with_columns(pl.lit(None, pl.String).alias(f) for f in CANONICAL_FIELDS if f not in fields.values())
        .select(SOURCE_ROW, *CANONICAL_FIELDS, *(c for c in mapping.values() if c.startswith(EXTRA_PREFIX)))
        .collect()
    )
    return frame, mapping


def source_file(landing: Path, partition: str, configured_path: str) -> tuple[Path, str]:
    """The file a partition imports and its full content hash; fails if its bytes changed since it landed."""
    path = Path(configured_path).resolve() if configured_path else find_landed_file(landing, partition)
    if not path.is_file():
        raise dg.Failure(description=f"{path}: no such file")
    digest = content_hash(path)
    if hash_of_key(partition) != digest[: len(hash_of_key(partition))]:
        raise dg.Failure(
            description=f"{path.name}: its content changed since it landed as {partition!r}; "
            "the new content lands as a new partition"
        )
    return path, digest


@dg.op(out={"records": dg.Out(), "summary": dg.Out()})
def parse(context: dg.OpExecutionContext, config: ParseConfig, landing: LandingFolder):
    """Read the partition's file into text columns mapped to the canonical lead fields."""
    started = time.perf_counter()
    path, digest = source_file(landing.path, context.partition_key, config.source_path)
    try:
        records, mapping = read_leads(path)
    except FileRejected as e:
        raise dg.Failure(description=f"{path.name}: {e}", metadata={"source_file": str(path)}) from e
    summary = {
        "partition_key": context.partition_key,
        "source_file": str(path),
        "content_hash": digest,
        "mapping": mapping,
        "rows_read": records.height,
        "seconds": {"parse": time.perf_counter() - started},
    }
    context.add_output_metadata(
        {
            "rows_read": records.height,
            "source_file": dg.MetadataValue.path(str(path)),
            "content_hash": digest,
            "column_mapping": dg.MetadataValue.json(mapping),
        },
        output_name="records",
    )
    yield dg.Output(records, "records")
    yield dg.Output(summary, "summary")
