"""Column mapping: source headers to canonical lead fields, through aliases and per-source profiles."""

import fnmatch
import re
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from import_pipeline.config import home_dir
from import_pipeline.schema import CANONICAL_FIELDS

PROFILES_DIR = Path(__file__).parent / "mapping_profiles"

# Normalized header -> canonical field. Secondary columns (a second email, mobile next to phone)
# are deliberately absent: two columns mapping to one field reject the file, so they stay extras.
ALIASES: dict[str, str] = {
    alias: canonical
    for canonical, aliases in {
        "company_name": (
            "company",
            "company name",
            "companyname",
            "organization",
            "organisation",
            "organization name",
            "account",
            "account name",
            "company account",
            "business",
            "business name",
            "employer",
            "societe",
            "raison sociale",
            "entreprise",
            "nom de l entreprise",
            "nom de la societe",
            "organisme",
        ),
        "first_name": ("first name", "firstname", "first", "given name", "fname", "prenom"),
        "last_name": ("last name", "lastname", "last", "surname", "family name", "lname", "nom", "nom de famille"),
        "email": (
            "email",
            "e mail",
            "email address",
            "e mail address",
            "mail",
            "work email",
            "business email",
            "email 1",
            "courriel",
            "adresse email",
            "adresse e mail",
            "adresse mail",
            "adresse electronique",
        ),
        "phone": (
            "phone",
            "phone number",
            "telephone",
            "telephone number",
            "tel",
            "work phone",
            "phone 1",
            "first phone",
            "direct phone",
            "work direct phone",
            "numero de telephone",
            "telephone 1",
        ),
        "title": ("title", "job title", "position", "role", "poste", "fonction", "titre"),
        "industry": ("industry", "sector", "secteur", "secteur d activite", "industrie"),
        "company_website": (
            "website",
            "company website",
            "web site",
            "url",
            "website url",
            "company url",
            "domain",
            "company domain",
            "company domain name",
            "site web",
            "site internet",
        ),
        "city": ("city", "town", "ville", "commune"),
        "state": ("state", "region", "province", "state province", "state region", "departement"),
        "country": ("country", "country region", "pays"),
        "external_id": (
            "external id",
            "id",
            "record id",
            "lead id",
            "contact id",
            "customer id",
            "apollo contact id",
            "identifiant",
        ),
        "notes": (
            "notes",
            "note",
            "comments",
            "comment",
            "description",
            "remarks",
            "commentaire",
            "commentaires",
        ),
    }.items()
    for alias in (canonical.replace("_", " "), *aliases)
}


class MappingError(Exception):
    """The headers cannot be mapped; the message names the columns involved."""


@dataclass(frozen=True)
class MappingProfile:
    """Header mappings for one source (a CRM or vendor export), overriding the aliases."""

    name: str
    file_pattern: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    review: bool = False  # its files' imports wait for approval (a plan first; approve_import_job commits)

    @classmethod
    def load(cls, path: Path) -> "MappingProfile":
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        columns = {normalize_header(h): f for h, f in data.get("columns", {}).items()}
        unknown = sorted(set(columns.values()) - set(CANONICAL_FIELDS))
        if unknown:
            raise MappingError(f"mapping profile {path.name} maps to unknown fields {unknown}")
        review = data.get("review", False)
        if not isinstance(review, bool):
            raise MappingError(f"mapping profile {path.name}: review must be true or false, not {review!r}")
        return cls(data.get("name", path.stem), data.get("file_pattern", ""), columns, review)


def profile_folders() -> tuple[Path, ...]:
    """Where profiles are read from: the state folder's own `mapping_profiles/` first, then those shipped here."""
    return (home_dir() / "mapping_profiles", PROFILES_DIR)


def profiles(folders: Sequence[Path] | None = None) -> list[MappingProfile]:
    """The mapping profiles of `folders` (default `profile_folders()`), each folder's by file name."""
    found = []
    for folder in profile_folders() if folders is None else folders:
        found += [MappingProfile.load(p) for p in sorted(folder.glob("*.toml"))] if folder.is_dir() else []
    return found


def choose_profile(file_name: str, requested: str, folders: Sequence[Path] | None = None) -> MappingProfile | None:
    """The profile named in run config, else the first whose file pattern matches the file name."""
    available = profiles(folders)
    if requested:
        for profile in available:
            if profile.name == requested:
                return profile
        raise MappingError(f"no mapping profile named {requested!r}; available: {[p.name for p in available]}")
    for profile in available:
        if profile.file_pattern and fnmatch.fnmatch(file_name.lower(), profile.file_pattern.lower()):
            return profile
    return None


def normalize_header(header: str) -> str:
    """Lower-case, accent-free, punctuation-free header text: `" Prénom_1 "` -> `"prenom 1"`."""
    decomposed = unicodedata.normalize("NFKD", header.replace("\ufeff", ""))
    ascii_text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[^a-z0-9]+", " ", ascii_text.lower()).strip()


def field_of(header: str, profile: MappingProfile | None = None) -> str | None:
    """The canonical field a header names by the profile or the alias table, alone; None if neither knows it."""
    by_profile = profile.columns.get(normalize_header(header)) if profile else None
    return by_profile or ALIASES.get(normalize_header(header))


def map_headers(headers: list[str], profile: MappingProfile | None = None) -> dict[str, str]:
    """Source header -> canonical field for every header the profile or the alias table knows.

    A profile's mappings win: an alias for a field the profile already mapped leaves that column unmapped.
    """
    mapping: dict[str, str] = {}
    by_profile = {
        h: profile.columns[normalize_header(h)] for h in headers if profile and normalize_header(h) in profile.columns
    }
    claimed: dict[str, str] = {}
    for header in headers:
        canonical = by_profile.get(header) or ALIASES.get(normalize_header(header))
        if canonical is None or (header not in by_profile and canonical in by_profile.values()):
            continue
        if canonical in claimed:
            raise MappingError(f"columns {claimed[canonical]!r} and {header!r} both map to the field {canonical!r}")
        claimed[canonical] = header
        mapping[header] = canonical
    if "company_name" not in claimed:
        raise MappingError(f"no column maps to company_name; the headers found are {headers}")
    return mapping


def maps_company(cells: Sequence[str | None]) -> bool:
    """Whether a row of cells looks like a header row: one of them names the company column."""
    return any(c is not None and ALIASES.get(normalize_header(c)) == "company_name" for c in cells)
