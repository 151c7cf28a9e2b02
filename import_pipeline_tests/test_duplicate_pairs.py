"""bench/duplicate_pairs.py: the labelled possible-duplicate generator, and how it scores a detector."""

import importlib.util
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest


def _load() -> ModuleType:
    """The generator, loaded from its file: bench/ is scripts, not a package."""
    path = Path(__file__).resolve().parents[1] / "bench" / "duplicate_pairs.py"
    spec = importlib.util.spec_from_file_location("duplicate_pairs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pairs = _load()


@pytest.fixture(scope="module")
def generated():
    """3,000 existing leads and 1,000 incoming rows (20% duplicates, 10% hard non-duplicates), seed 11."""
    existing = pairs.existing_leads(3000, 11)
    rows, labels = pairs.incoming_rows(existing, 1000, 11)
    return existing, rows, labels


def test_duplicate_pairs_same_seed_same_rows(generated):
    """The same seed gives the same leads, rows and labels; another seed other leads."""
    existing, rows, labels = generated
    again = pairs.existing_leads(3000, 11)
    assert again.equals(existing)
    assert all(a.equals(b) for a, b in zip(pairs.incoming_rows(again, 1000, 11), (rows, labels), strict=True))
    assert not pairs.existing_leads(3000, 12).equals(existing)


def test_duplicate_pairs_label_counts_per_kind(generated):
    """Exact counts per kind, source_row numbered from 2 as the importer numbers lines, originals only for duplicates."""
    existing, rows, labels = generated
    assert rows.columns == list(pairs.HEADERS) == existing.columns
    assert dict(labels.group_by("kind").len().iter_rows()) == {
        "duplicate": 190,
        "duplicate_one_corroboration": 10,
        "same_company_other_person": 50,
        "same_name_other_company": 50,
        "new": 700,
    }
    assert labels["source_row"].to_list() == list(range(2, 1002))
    duplicate = labels["kind"].is_in(pairs.DUPLICATE_KINDS)
    assert (labels["original_email"].is_not_null() == duplicate).all()
    originals = labels.filter(duplicate)["original_email"]
    assert originals.is_in(existing["Email"].implode()).all() and originals.n_unique() == originals.len()
    assert (labels.filter(duplicate)["variations"] != "").all()


def test_duplicate_pairs_duplicates_never_share_an_email(generated):
    """No incoming email (trimmed, lower case) is an existing lead's, and each duplicate keeps its corroborations."""
    existing, rows, labels = generated
    known = existing["Email"].str.strip_chars().str.to_lowercase().implode()
    assert not rows["Email"].str.strip_chars().str.to_lowercase().is_in(known).any()
    duplicates = pl.concat([rows, labels], how="horizontal").filter(pl.col("kind").is_in(pairs.DUPLICATE_KINDS))
    originals = duplicates.select(pl.col("original_email").alias("Email")).join(
        existing, on="Email", how="left", maintain_order="left"
    )
    assert (duplicates["Email"].str.to_lowercase() != duplicates["original_email"].str.to_lowercase()).all()
    found = pairs._corroborations(duplicates, originals).select(pl.sum_horizontal(pl.all())).to_series()
    hard = duplicates["kind"] == "duplicate_one_corroboration"
    assert (found.filter(hard) == 1).all() and (found.filter(~hard) >= 2).all()


def test_duplicate_pairs_evaluate_hand_made_example():
    """Precision, recall, review share and the per-kind counts of four predictions on five rows, by hand."""
    labels = pl.DataFrame(
        {
            "source_row": [2, 3, 4, 5, 6],
            "kind": ["duplicate", "duplicate", "duplicate_one_corroboration", "same_name_other_company", "new"],
            "original_email": ["a@x.com", "b@x.com", "c@x.com", None, None],
        }
    )
    predictions = pl.DataFrame(
        {
            "source_row": [2, 3, 5, 4],
            "candidate_email": [" A@X.com", "z@x.com", "d@x.com", "c@x.com"],
            "band": ["flagged", "flagged", "review", "review"],
        }
    )
    report = pairs.evaluate(labels, predictions)
    assert report["flagged"] == {"predicted": 2, "correct": 1, "precision": 0.5, "recall": 0.3333}
    assert report["review"] == {"predicted": 2, "correct": 1, "precision": 0.5, "recall": 0.3333}
    assert report["flagged_or_review"] == {"predicted": 4, "correct": 2, "precision": 0.5, "recall": 0.6667}
    assert report["review_share"] == 0.4
    assert report["by_kind"]["duplicate"] == {
        "rows": 2,
        "flagged": 2,
        "flagged_correct": 1,
        "review": 0,
        "review_correct": 0,
    }
    assert report["by_kind"]["same_name_other_company"] == {"rows": 1, "flagged": 0, "review": 1}
    assert report["by_kind"]["new"] == {"rows": 1, "flagged": 0, "review": 0}
