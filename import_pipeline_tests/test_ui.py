"""The Dagster UI in a real browser: launch an import from the Launchpad, see its counts, re-execute a
failed import from failure, import a new file from the asset catalog by its name, see a failed import as a
failed partition, the checks and the rejected rows.

`import-pipeline dev` runs as a user starts it, on the test's databases; Playwright drives Debian's
chromium (`apt-get install chromium`). Screenshots of every step are kept in `test-artifacts/ui/`
(or `$UI_SCREENSHOTS`).
"""

import os
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from import_pipeline.config import PROJECT_ROOT, UI_URL_ENV
from import_pipeline.landing import content_hash, landed_files_partitions_def, partition_key
from import_pipeline.launch import import_file
from import_pipeline_tests.dev_server import STARTUP_SECONDS, dev_server, free_port, tail
from import_pipeline_tests.shared import FAIL_FIRST_LOAD, started_steps

pytestmark = pytest.mark.ui

CHROMIUM = Path("/usr/bin/chromium")
LOCATION = "import_pipeline"  # workspace.yaml
RUN_URL = re.compile(r"/runs/([0-9a-f-]{36})$")
RUN_SECONDS = 90

# The Launchpad config: strict mode, a strategy and a mapping profile (not the file name's). The
# import's steps are ops of the graph-backed `leads` asset, so the Launchpad nests them under `leads`.
RUN_CONFIG_YAML = """ops:
  leads:
    ops:
      parse:
        config:
          mapping_profile: hubspot_contacts
      validate:
        config:
          mode: strict
      load:
        config:
          on_existing: update
"""
# A clean HubSpot-style export (strict mode loads it): 30 rows, the last 2 repeat the first 2 emails.
FIRST_FILE = "Record ID,First Name,Last Name,Company Name,Email,Phone Number\n" + "".join(
    f"{900 + i},Ann{i},Lee,Company {i},ann{i % 28}@example.com,+1 512 555 {1000 + i}\n" for i in range(30)
)

# Imported from the catalog by name: 30 rows, two rejected (one for its email, one with nothing to reach).
THIRD_FILE = (
    "Company,First Name,Email,Phone\n"
    + "".join(f"Hooli {i},Gavin{i},gavin{i}@hooli.example,\n" for i in range(28))
    + "Pied Piper,Richard,richard.piedpiper.example,\nAviato,Erlich,,\n"
)
THIRD_NAME = "uploads/ui_third.csv"  # a folder inside the landing folder: the sensor leaves it to the user

# Landed for the sensor: a profile of the state folder makes vendor lists wait for approval.
REVIEW_PROFILE = 'name = "vendor_lists"\nfile_pattern = "*vendor*"\nreview = true\n'
VENDOR_FILE = (
    "Company,Email,Title\nInitech,peter.gibbons@initech.example,Engineer\nUmbrella,alice@umbrella.example,CEO\n"
)
APPROVE_CONFIG = "ops:\n  leads:\n    ops:\n      load:\n        config:\n          on_existing: update\n"
REVERT_CONFIG = "ops:\n  revert:\n    config:\n      force: false\n"
ROBERT = "Company,First Name,Last Name,Email,Phone\nACME Inc.,Robert,Smith,robert.smith@acme.example,+1 415 555 0100\n"
BOB = "Company,First Name,Last Name,Email,Phone,City\nAcme Incorporated,Bob,Smith,bob.smith@mail.example,4155550100,Boston\n"
SCORING = {"ops": {"dedupe": {"config": {"possible_duplicates": {"enabled": True}}}}}

SECOND_FILE = """Company Name,First Name,Last Name,Email,Phone
Initech,Peter,Gibbons,peter.gibbons@initech.example,+1 512 555 0101
Initrode,Samir,Nagheenanajar,samir@initrode.example,+1 512 555 0102
Chotchkie's,Joanna,,joanna@chotchkies.example,
"""


def _land(pipeline, source: Path) -> str:
    """Drop a file into the landing folder with its partition already added; returns the partition key.

    The partition comes first so the landing sensor (running, as in production) skips the file as
    already known instead of launching its own run: the run here is the one launched from the UI.
    """
    key = partition_key(source.name, content_hash(source))
    pipeline.instance.add_dynamic_partitions(landed_files_partitions_def.name, [key])
    shutil.copy(source, pipeline.landing / source.name)
    return key


class Shots:
    """Numbered screenshots of the steps."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def take(self, page: Page, name: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}_{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def _launch_from_launchpad(
    page: Page,
    base: str,
    key: str,
    shots: Shots,
    name: str,
    job: str = "import_leads_job",
    config: str = RUN_CONFIG_YAML,
) -> str:
    """Choose the partition, type the run config, press Launch Run; returns the new run's id."""
    page.goto(f"{base}/locations/{LOCATION}/jobs/{job}/playground")
    partition = page.get_by_placeholder("Partition")
    # The first page load waits for the code location to load.
    partition.wait_for(timeout=STARTUP_SECONDS * 1000)
    partition.click()
    partition.fill(key.split("@")[0])
    # The partitions' list can take longer than the default 30 s to answer on a busy machine (once, with the rest
    # of the suite running beside it).
    page.get_by_role("menuitem", name=key, exact=True).click(timeout=STARTUP_SECONDS * 1000)
    expect(page.get_by_text(f"partition: {key}", exact=True)).to_be_visible()
    editor = page.locator(".CodeMirror")
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(config)
    expect(editor).to_contain_text(config.strip().splitlines()[-1].strip())
    expect(page.get_by_text("No errors", exact=True)).to_be_visible()
    shots.take(page, f"{name}_launchpad")
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(RUN_URL)
    return RUN_URL.search(page.url).group(1)


def _launch_unpartitioned(page: Page, base: str, job: str, config: str) -> str:
    """Type the asset job's config (under ops: possible_duplicates: config:), press Launch Run; the new run's id."""
    page.goto(f"{base}/locations/{LOCATION}/jobs/{job}/playground")
    editor = page.locator(".CodeMirror")
    editor.wait_for(timeout=STARTUP_SECONDS * 1000)
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(f"ops:\n  possible_duplicates:\n    config:\n      {config}\n")
    expect(editor).to_contain_text(config.splitlines()[-1].strip())
    expect(page.get_by_text("No errors", exact=True)).to_be_visible()
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(RUN_URL)
    return RUN_URL.search(page.url).group(1)


def _parse_details(instance: dg.DagsterInstance, run_id: str) -> dict:
    """What the run's parse step detected about its file (its `file` metadata)."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records:
        event = record.event_log_entry.dagster_event
        if event.step_key == "leads.parse" and "file" in event.step_output_data.metadata:
            return event.step_output_data.metadata["file"].value
    raise AssertionError(f"run {run_id} has no parse metadata")


def _status(page: Page, status: str) -> None:
    """The run header's status tag reads `status` (the page updates live)."""
    expect(page.get_by_text(status, exact=True).first).to_be_visible(timeout=RUN_SECONDS * 1000)


def _metadata_value(page: Page, label: str):
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=label, exact=True)).first


def _materialize_by_name(page: Page, base: str, name: str, shots: Shots, shot: str) -> None:
    """In the asset catalog: Materialize, add a partition named as the file, launch its run."""
    page.goto(f"{base}/assets/leads")
    page.get_by_text("Materialize", exact=False).first.click()
    page.get_by_text("Add a partition").click()
    # Typed into the dialog's own input, not the keyboard: CI once typed before the input had mounted, and
    # the dialog saves an empty name without complaint (Save is enabled while the name is empty).
    partition_input = page.get_by_placeholder("name", exact=True)
    partition_input.fill(name)
    expect(partition_input).to_have_value(name)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("button", name="Launch 1 run")).to_be_enabled()
    shots.take(page, shot)
    page.get_by_role("button", name="Launch 1 run").click()
    expect(page.get_by_text("Launched run")).to_be_visible()


def _finished_run(instance: dg.DagsterInstance, partition: str) -> dg.DagsterRun:
    """The run of `partition` once it has finished."""
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": partition}))
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"no finished run of {partition!r} within {RUN_SECONDS} s")


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
def test_ui_launch_watch_reexecute_and_catalog(pipeline, tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv(UI_URL_ENV, f"http://127.0.0.1:{port}")
    shots = Shots(Path(os.environ.get("UI_SCREENSHOTS") or PROJECT_ROOT / "test-artifacts" / "ui"))
    log_path = tmp_path / "dev.log"

    with dev_server(port, log_path) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless=new"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            # (a) A landed file, launched from the Launchpad with its partition and run config.
            first = tmp_path / "contacts_export.csv"
            first.write_text(FIRST_FILE)
            first_key = _land(pipeline, first)
            first_run = _launch_from_launchpad(page, base, first_key, shots, "first")

            # (b) The run succeeds and its counts are on the run page.
            _status(page, "Success")
            expect(page.get_by_text(f"partition: {first_key}", exact=True)).to_be_visible()
            shots.take(page, "first_run_success")
            page.get_by_placeholder("Filter…").fill("type:ASSET_MATERIALIZATION")
            expect(page.get_by_text("Materialized value leads.")).to_be_visible()
            loaded = pipeline.scalar("SELECT count(*) FROM leads")
            assert loaded == 30 - 2
            for label, value in [("rows_read", 30), ("duplicates_in_file", 2), ("inserted", loaded)]:
                expect(_metadata_value(page, label)).to_contain_text(str(value))
            shots.take(page, "first_run_metadata")
            assert pipeline.instance.get_run_by_id(first_run).status == dg.DagsterRunStatus.SUCCESS
            assert _parse_details(pipeline.instance, first_run)["mapping_profile"] == "hubspot_contacts"
            assert (
                pipeline.scalar("SELECT count(*) FROM leads WHERE external_id = '901' AND phone_e164 = '+15125551001'")
                == 1
            )
            assert not (pipeline.landing / first.name).exists(), "an imported file is archived"

            # (c) An import started from the command line fails on a real database error the first
            # time; the UI re-executes it from failure.
            pipeline.execute(FAIL_FIRST_LOAD)
            second = tmp_path / "ui_second.csv"
            second.write_text(SECOND_FILE)
            second_key = _land(pipeline, second)
            failed = import_file(pipeline.landing / second.name)
            assert (failed["status"], failed["partition_key"]) == ("failed", second_key)
            failed_run = failed["run_id"]
            page.goto(f"{base}/runs/{failed_run}")
            _status(page, "Failure")
            expect(page.get_by_text("injected failure: connection to the leads database lost").first).to_be_visible()
            shots.take(page, "second_run_failure")
            assert pipeline.scalar("SELECT count(*) FROM leads") == loaded, "a failed load leaves nothing behind"

            page.get_by_role("button").filter(has=page.get_by_role("img", name="arrow_drop_down")).click()
            page.get_by_role("menuitem", name="From failure").click()
            page.wait_for_url(lambda url: (m := RUN_URL.search(url)) is not None and m.group(1) != failed_run)
            retry_run = RUN_URL.search(page.url).group(1)
            _status(page, "Success")
            expect(page.get_by_text(f"partition: {second_key}", exact=True)).to_be_visible()
            shots.take(page, "retry_success")

            retried = pipeline.instance.get_run_by_id(retry_run)
            assert retried.status == dg.DagsterRunStatus.SUCCESS
            assert retried.parent_run_id == failed_run
            assert started_steps(pipeline.instance, retry_run) == ["load", "archive_file"]
            assert pipeline.scalar("SELECT count(*) FROM leads") == loaded + 3
            assert pipeline.scalar("SELECT count(*) FROM leads WHERE email = 'peter.gibbons@initech.example'") == 1
            assert not (pipeline.landing / second.name).exists()
            # No run other than the three above: the landing sensor launched nothing of its own.
            assert {r.run_id for r in pipeline.instance.get_runs()} == {first_run, failed_run, retry_run}

            # (d) The catalog lists both files as materialized partitions of `leads`.
            expected_runs = {first_run, failed_run, retry_run}
            page.goto(f"{base}/assets/leads?view=partitions")
            expect(page.get_by_title(first_key)).to_be_visible(timeout=60_000)
            expect(page.get_by_title(second_key)).to_be_visible()
            expect(page.get_by_text("Materialized (2)")).to_be_visible()
            page.get_by_title(first_key).click()
            expect(_metadata_value(page, "rows_read")).to_contain_text("30")
            expect(_metadata_value(page, "inserted")).to_contain_text(str(loaded))
            # The run config typed in the Launchpad is the one the load used.
            expect(_metadata_value(page, "on_existing")).to_contain_text("update")
            shots.take(page, "catalog_partitions")

            # (e) A new file imported from the catalog by its name, without knowing any partition key.
            (pipeline.landing / "uploads").mkdir()
            (pipeline.landing / THIRD_NAME).write_text(THIRD_FILE)
            _materialize_by_name(page, base, THIRD_NAME, shots, "import_by_name")
            third = _finished_run(pipeline.instance, THIRD_NAME)
            assert third.status == dg.DagsterRunStatus.SUCCESS
            assert pipeline.scalar("SELECT count(*) FROM leads WHERE email LIKE %s", ("%@hooli.example",)) == 28
            assert not (pipeline.landing / THIRD_NAME).exists()

            # (f) Its rejected rows, line by line with their reasons, in the partition's record.
            page.goto(f"{base}/assets/leads?view=partitions&partition={THIRD_NAME}")
            rejected = _metadata_value(page, "rejected_rows")
            expect(rejected).to_contain_text("Why rejected")
            expect(rejected).to_contain_text("email is not valid: An email address must have an @-sign")
            expect(rejected).to_contain_text("richard.piedpiper.example")
            shots.take(page, "rejected_rows")

            # (g) The Checks tab: rows conserved, and the reject rate (2 of 30) warned about.
            page.goto(f"{base}/assets/leads?view=checks")
            expect(page.get_by_text("rows_conserved").first).to_be_visible()
            page.get_by_text("rows_conserved").first.click()
            expect(page.get_by_text("30 rows read, 30 committed outcomes").first).to_be_visible()
            shots.take(page, "checks_rows_conserved")
            page.get_by_text("reject_rate").first.click()
            expect(page.get_by_text("2 of 30 rows rejected (6.7%; warning above 5%)").first).to_be_visible()
            shots.take(page, "checks_reject_rate")

            # (h) A file that is not there: a Failed partition, linked to its run, which says why in one line.
            _materialize_by_name(page, base, "not_there.csv", shots, "import_missing")
            missing = _finished_run(pipeline.instance, "not_there.csv")
            assert missing.status == dg.DagsterRunStatus.FAILURE
            page.goto(f"{base}/assets/leads?view=partitions&partition=not_there.csv")
            expect(page.get_by_text("Failed (1)")).to_be_visible()
            expect(page.get_by_text(f"Run {missing.run_id[:8]} failed")).to_be_visible()
            shots.take(page, "failed_partition")
            page.get_by_text(missing.run_id[:8]).first.click()
            expect(
                page.get_by_text("no file named 'not_there.csv' in the landing folder", exact=False).first
            ).to_be_visible()
            shots.take(page, "failed_run")
            assert pipeline.scalar("SELECT count(*) FROM imports WHERE partition_key = 'not_there.csv'") == 0
            assert {r.run_id for r in pipeline.instance.get_runs()} == expected_runs | {third.run_id, missing.run_id}

            # (i) A vendor list lands; the landing sensor's run plans it and waits for approval.
            (pipeline.home / "mapping_profiles").mkdir()
            (pipeline.home / "mapping_profiles" / "vendor_lists.toml").write_text(REVIEW_PROFILE)
            vendor = pipeline.landing / "vendor_ui.csv"
            vendor.write_text(VENDOR_FILE)
            vendor_key = partition_key(vendor.name, content_hash(vendor))
            planned = _finished_run(pipeline.instance, vendor_key)
            assert planned.status == dg.DagsterRunStatus.SUCCESS and "import_pipeline/awaiting_approval" in planned.tags
            assert pipeline.scalar("SELECT title FROM leads WHERE email = 'peter.gibbons@initech.example'") is None
            page.goto(f"{base}/runs/{planned.run_id}")
            _status(page, "Success")
            page.get_by_placeholder("Filter…").fill("type:ASSET_OBSERVATION")
            expect(_metadata_value(page, "awaiting_approval")).to_contain_text("true")
            expect(_metadata_value(page, "inserted")).to_contain_text("1")
            shots.take(page, "awaiting_approval")

            # (j) Approved from the Launchpad of approve_import_job, choosing the strategy at that point.
            approve_run = _launch_from_launchpad(
                page, base, vendor_key, shots, "approve", "approve_import_job", APPROVE_CONFIG
            )
            _status(page, "Success")
            shots.take(page, "approved")
            assert (
                pipeline.instance.get_run_by_id(approve_run).tags["import_pipeline/approved_plan_run"] == planned.run_id
            )
            assert (
                pipeline.scalar("SELECT title FROM leads WHERE email = 'peter.gibbons@initech.example'") == "Engineer"
            )
            assert pipeline.scalar("SELECT count(*) FROM leads WHERE email = 'alice@umbrella.example'") == 1

            # (k) Reverted from the Launchpad of revert_import_job: Peter's title is gone again, Alice removed.
            revert_run = _launch_from_launchpad(
                page, base, vendor_key, shots, "revert", "revert_import_job", REVERT_CONFIG
            )
            _status(page, "Success")
            page.get_by_placeholder("Filter…").fill("type:ASSET_OBSERVATION")
            expect(_metadata_value(page, "removed")).to_contain_text("1")
            expect(_metadata_value(page, "restored")).to_contain_text("1")
            shots.take(page, "reverted")
            assert pipeline.instance.get_run_by_id(revert_run).status == dg.DagsterRunStatus.SUCCESS
            assert pipeline.scalar("SELECT title FROM leads WHERE email = 'peter.gibbons@initech.example'") is None
            assert pipeline.scalar("SELECT count(*) FROM leads WHERE email = 'alice@umbrella.example'") == 0
            assert pipeline.scalar("SELECT count(*) FROM leads") == loaded + 3 + 28

            # (l) A possible duplicate queued by an import with scoring on, seen in the possible_duplicates asset
            # and merged from the Launchpad of resolve_duplicates_job.
            for name, text, config in (("robert.csv", ROBERT, {}), ("bob.csv", BOB, SCORING)):
                (tmp_path / name).write_text(text)
                assert import_file(tmp_path / name, config).get("possible_duplicates", 0) == (1 if config else 0)
            pair = pipeline.scalar("SELECT id FROM possible_duplicates WHERE status = 'open'")
            _launch_unpartitioned(page, base, "resolve_duplicates_job", "action: show")
            _status(page, "Success")
            page.goto(f"{base}/assets/possible_duplicates")
            expect(page.get_by_text(f"Pair {pair}", exact=False).first).to_be_visible()
            expect(page.get_by_role("cell", name="Acme Incorporated", exact=True).first).to_be_visible()
            expect(page.get_by_text("first name: nickname", exact=False).first).to_be_visible()
            _metadata_value(page, "open_pairs").scroll_into_view_if_needed()
            shots.take(page, "possible_duplicates")
            _launch_unpartitioned(page, base, "resolve_duplicates_job", f"action: merge\n      pairs: [{pair}]")
            _status(page, "Success")
            shots.take(page, "duplicates_merged")
            robert = pipeline.scalar("SELECT id FROM leads WHERE email = 'robert.smith@acme.example'")
            assert pipeline.scalar("SELECT city FROM leads WHERE id = %s", (robert,)) == "Boston"
            assert pipeline.scalar("SELECT duplicate_of FROM leads WHERE email = 'bob.smith@mail.example'") == robert
            assert pipeline.scalar("SELECT status FROM possible_duplicates WHERE id = %s", (pair,)) == "merged"
        except Exception:
            try:
                shots.take(page, "failure")
            except Exception as e:  # the page itself may be gone; the original error matters
                print(f"no failure screenshot: {e}")
            print(f"--- import-pipeline dev log (tail) ---\n{tail(log_path)}")
            raise
        finally:
            browser.close()
