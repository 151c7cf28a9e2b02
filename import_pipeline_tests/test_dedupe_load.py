"""Match keys, strategies against existing leads, owners and the audit trail, on real PostgreSQL."""

import json
import subprocess

from import_pipeline.launch import import_file
from import_pipeline_tests.shared import CLI

EXISTING = (
    "Company,Email,Title,City,External ID,Phone\n"
    "Acme,ann@acme.com,CEO,,A-1,\n"  # 2
    "Beta,bob@beta.com,,Lyon,B-2,\n"  # 3
)
INCOMING = (
    "Company,Email,Title,City,External ID,Phone\n"
    "Acme Corp,ANN@acme.com,,Paris,,\n"  # 2 matches Ann: title empty here, city new
    "Gamma,gus@gamma.com,,,,\n"  # 3 new
    "Gamma bis,gus@gamma.com,,,,\n"  # 4 duplicate of line 3 in the file
)


def _run(tmp_path, name: str, text: str, load: dict | None = None, dedupe: dict | None = None) -> dict:
    path = tmp_path / name
    path.write_text(text)
    config = {"ops": {"load": {"config": load or {}}, "dedupe": {"config": dedupe or {}}}}
    result = import_file(path, config)
    assert result["status"] == "success", result["error"]
    return result


def _history(pipeline, partition_key: str) -> list[tuple]:
    return pipeline.query(
        "SELECT h.source_row, h.action, l.email_key, h.duplicate_of_row, h.changes FROM import_outcomes h "
        "JOIN imports i ON i.id = h.import_id LEFT JOIN leads l ON l.id = h.lead_id "
        "WHERE i.partition_key = %s ORDER BY h.source_row",
        (partition_key,),
    )


def _lead(pipeline, email: str) -> tuple:
    return pipeline.query(
        "SELECT company_name, title, city FROM leads WHERE email_key = %s AND duplicate_of IS NULL", (email,)
    )[0]


def test_strategy_skip_leaves_existing_leads_alone(pipeline, tmp_path):
    _run(tmp_path, "existing.csv", EXISTING)
    result = _run(tmp_path, "incoming.csv", INCOMING)

    assert (result["inserted"], result["duplicates_existing"], result["duplicates_in_file"]) == (1, 1, 1)
    assert _lead(pipeline, "ann@acme.com") == ("Acme", "CEO", None)
    assert _history(pipeline, result["partition_key"]) == [
        (2, "skipped", "ann@acme.com", None, None),
        (3, "inserted", "gus@gamma.com", None, None),
        (4, "duplicate_in_file", "gus@gamma.com", 3, None),
    ]


def test_strategy_update_overwrites_with_non_empty_values(pipeline, tmp_path):
    _run(tmp_path, "existing.csv", EXISTING)
    result = _run(tmp_path, "incoming.csv", INCOMING, load={"on_existing": "update"})

    assert (result["inserted"], result["updated"], result["duplicates_existing"]) == (1, 1, 0)
    assert _lead(pipeline, "ann@acme.com") == ("Acme Corp", "CEO", "Paris")
    assert _history(pipeline, result["partition_key"])[0][:4] == (2, "updated", "ann@acme.com", None)
    changes = _history(pipeline, result["partition_key"])[0][4]
    assert changes["company_name"] == {"old": "Acme", "new": "Acme Corp"}
    assert changes["city"] == {"old": None, "new": "Paris"}
    assert changes["email"] == {"old": "ann@acme.com", "new": "ANN@acme.com"}
    assert "title" not in changes, "an empty incoming value never overwrites"
    updated_by = pipeline.scalar(
        "SELECT i.partition_key FROM leads l JOIN imports i ON i.id = l.updated_by_import WHERE l.email_key = 'ann@acme.com'"
    )
    assert updated_by == result["partition_key"]


def test_strategy_update_twice_changes_nothing_the_second_time(pipeline, tmp_path):
    _run(tmp_path, "existing.csv", EXISTING)
    _run(tmp_path, "incoming.csv", INCOMING, load={"on_existing": "update"})
    again = _run(tmp_path, "incoming again.csv", INCOMING + "\n", load={"on_existing": "update"})

    assert (again["updated"], again["duplicates_existing"], again["inserted"]) == (0, 2, 0)


def test_strategy_merge_fills_only_empty_fields(pipeline, tmp_path):
    _run(tmp_path, "existing.csv", EXISTING)
    result = _run(tmp_path, "incoming.csv", INCOMING, load={"on_existing": "merge"})

    assert (result["merged"], result["inserted"]) == (1, 1)
    assert _lead(pipeline, "ann@acme.com") == ("Acme", "CEO", "Paris")
    changes = _history(pipeline, result["partition_key"])[0][4]
    assert changes["city"] == {"old": None, "new": "Paris"} and "company_name" not in changes


def test_strategy_create_inserts_a_flagged_possible_duplicate(pipeline, tmp_path):
    _run(tmp_path, "existing.csv", EXISTING)
    result = _run(tmp_path, "incoming.csv", INCOMING, load={"on_existing": "create"})

    assert (result["created"], result["inserted"], result["duplicates_existing"]) == (1, 1, 0)
    assert pipeline.query(
        "SELECT d.company_name, o.company_name FROM leads d JOIN leads o ON o.id = d.duplicate_of"
    ) == [("Acme Corp", "Acme")]


def test_keep_last_reports_the_line_each_duplicate_repeats(pipeline, tmp_path):
    result = _run(tmp_path, "incoming.csv", INCOMING, dedupe={"keep": "last"})

    assert _history(pipeline, result["partition_key"])[1:] == [
        (3, "duplicate_in_file", "gus@gamma.com", 4, None),
        (4, "inserted", "gus@gamma.com", None, None),
    ]
    assert _lead(pipeline, "gus@gamma.com")[0] == "Gamma bis"


def test_external_id_matches_only_within_its_source(pipeline, tmp_path):
    _run(tmp_path, "existing.csv", EXISTING, dedupe={"match_keys": ["external_id"], "source": "crm"})
    other_email = "Company,Email,External ID\nAcme renamed,new-ann@acme.com,A-1\n"

    same_source = _run(tmp_path, "a.csv", other_email, dedupe={"match_keys": ["external_id"], "source": "crm"})
    other_source = _run(
        tmp_path, "b.csv", other_email + "\n", dedupe={"match_keys": ["external_id"], "source": "vendor"}
    )

    assert (same_source["duplicates_existing"], same_source["inserted"]) == (1, 0)
    assert (other_source["duplicates_existing"], other_source["inserted"]) == (0, 1)


def test_phone_company_key_is_opt_in(pipeline, tmp_path):
    first = "Company,Phone\nAcme S.A.,+33 1 23 45 67 89\n"
    second = "Company,Phone\nACME SA,+33 1 23 45 67 89\n"
    _run(tmp_path, "a.csv", first)
    by_email = _run(tmp_path, "b.csv", second)
    by_phone = _run(tmp_path, "c.csv", second + "\n", dedupe={"match_keys": ["email", "phone_company"]})

    assert by_email["inserted"] == 1, "rows without email are never matched by the email key"
    assert (by_phone["duplicates_existing"], by_phone["inserted"]) == (1, 0)


def test_soft_deleted_leads_neither_match_nor_block(pipeline, tmp_path):
    _run(tmp_path, "existing.csv", EXISTING)
    pipeline.execute("UPDATE leads SET deleted_at = now() WHERE email_key = 'ann@acme.com'")

    result = _run(tmp_path, "incoming.csv", INCOMING)

    assert (result["inserted"], result["duplicates_existing"]) == (2, 0)
    assert pipeline.scalar("SELECT count(*) FROM leads WHERE email_key = 'ann@acme.com'") == 2


def test_owner_assignment_single_round_robin_and_by_column(pipeline, tmp_path):
    rows = "".join(f"C{i},c{i}@x.com,{'' if i % 2 else 'zoe'}\n" for i in range(5))
    _run(tmp_path, "single.csv", "Company,Email,Rep\n" + rows, load={"assign": "single", "owners": ["sam"]})
    robin = "Company,Email\n" + "".join(f"R{i},r{i}@x.com\n" for i in range(3))
    _run(tmp_path, "r1.csv", robin, load={"assign": "round_robin", "owners": ["ann", "bob"]})
    _run(tmp_path, "r2.csv", robin.replace("@x", "@y"), load={"assign": "round_robin", "owners": ["ann", "bob"]})
    _run(
        tmp_path,
        "col.csv",
        "Company,Email,Rep\n" + rows.replace("@x", "@z"),
        load={"assign": "by_column", "owner_column": "Rep", "owners": ["fallback"]},
    )

    owners = dict(pipeline.query("SELECT email, owner FROM leads"))
    assert {owners[f"c{i}@x.com"] for i in range(5)} == {"sam"}
    # The rotation continues across imports: ann bob ann | bob ann bob.
    assert [owners[f"r{i}@x.com"] for i in range(3)] + [owners[f"r{i}@y.com"] for i in range(3)] == [
        "ann",
        "bob",
        "ann",
        "bob",
        "ann",
        "bob",
    ]
    assert [owners[f"c{i}@z.com"] for i in range(5)] == ["zoe", "fallback", "zoe", "fallback", "zoe"]


def test_concurrent_imports_of_overlapping_files_add_up(pipeline, tmp_path):
    """Four imports at once, in separate processes: no duplicate lead, no lost row, counts add up."""
    files = []
    for n in range(4):
        # Each file shares 300 emails with every other file and has 100 of its own.
        rows = [f"Shared {i},shared{i}@x.com\n" for i in range(300)] + [
            f"Own {n}-{i},own{n}-{i}@x.com\n" for i in range(100)
        ]
        path = tmp_path / f"batch{n}.csv"
        path.write_text("Company,Email\n" + "".join(rows[n * 50 :] + rows[: n * 50]))
        files.append(path)
    processes = [
        subprocess.Popen([*CLI, "import", str(p), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in files
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    results = [json.loads(out) if out else {"status": "crashed", "error": err[-2000:]} for out, err in outputs]

    assert [r["status"] for r in results] == ["success"] * 4, [r["error"] for r in results]
    assert sum(r["inserted"] for r in results) == pipeline.scalar("SELECT count(*) FROM leads") == 300 + 4 * 100
    assert sum(r["duplicates_existing"] for r in results) == 3 * 300
    assert pipeline.scalar("SELECT count(*) - count(DISTINCT email_key) FROM leads") == 0
    assert pipeline.scalar("SELECT count(*) FROM import_outcomes") == 4 * 400


def test_email_shared_beyond_the_match_keys_is_a_duplicate_not_an_error(pipeline, tmp_path):
    """Live emails are unique whatever the keys: a row whose email is taken becomes a duplicate of that lead."""
    _run(tmp_path, "existing.csv", EXISTING, dedupe={"match_keys": ["external_id"]})
    incoming = (
        "Company,Email,Title,City,External ID,Phone\n"
        "Acme,ann@acme.com,,,A-9,\n"  # 2: another id, Ann's email: a duplicate of her lead
        "Gamma,gus@gamma.com,,,G-1,\n"  # 3 new
        "Gamma,GUS@gamma.com,,,G-2,\n"  # 4: another id, line 3's email: a duplicate within the file
    )
    result = _run(tmp_path, "incoming.csv", incoming, dedupe={"match_keys": ["external_id"]})

    assert (result["inserted"], result["duplicates_existing"], result["duplicates_in_file"]) == (1, 1, 1)
    assert _history(pipeline, result["partition_key"]) == [
        (2, "skipped", "ann@acme.com", None, None),
        (3, "inserted", "gus@gamma.com", None, None),
        (4, "duplicate_in_file", "gus@gamma.com", 3, None),
    ]
    assert pipeline.scalar("SELECT count(*) FROM leads") == 3
