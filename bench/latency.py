"""T3: a 1,000-row file dropped into the landing folder under `import-pipeline dev`, until it is committed.

The clock starts when the file lands (written elsewhere, then renamed in, as a careful client does) and
stops when its row in `imports` carries counts: the sensor's two looks at the file, the run queue, the
run's process start and the load's commit are all inside.
"""

import os
import time
from pathlib import Path

import psycopg

from import_pipeline_tests.dev_server import STARTUP_SECONDS, dev_server, free_port


def _sensor_ticking() -> bool:
    """The daemon has evaluated the landing sensor at least once (its tick is in Dagster's storage)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return any(
            state.instigator_name == "landing_sensor"
            and instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            for state in instance.all_instigator_state()
        )


def _timeline(file_name: str, landed_at: float) -> dict:
    """Seconds from the drop to each milestone of the file's run, from Dagster's own records."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        record = instance.get_run_records(dg.RunsFilter(tags={"import_pipeline/source_file": file_name}), limit=1)[0]
        # Step keys are the `leads` asset's ops ("leads.parse"); by their last part, as before the asset.
        steps = {
            (r.event_log_entry.step_key.split(".")[-1], r.event_log_entry.dagster_event.event_type_value): (
                r.event_log_entry.timestamp
            )
            for r in instance.get_records_for_run(record.dagster_run.run_id).records
            if r.event_log_entry.dagster_event is not None and r.event_log_entry.step_key
        }
    return {
        "run_requested_s": round(record.create_timestamp.timestamp() - landed_at, 2),
        "run_started_s": round(record.start_time - landed_at, 2),
        "first_step_s": round(steps[("parse", "STEP_START")] - landed_at, 2),
        "load_done_s": round(steps[("load", "STEP_SUCCESS")] - landed_at, 2),
    }


def drop_to_commit(sample: Path, landing: Path, leads_url: str, log: Path, timeout: float = 120) -> dict:
    """Seconds from the file landing to its import committed, with `import-pipeline dev` running."""
    with dev_server(free_port(), log):
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _sensor_ticking():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the landing sensor never ticked; see {log}")
            time.sleep(0.5)
        staged = landing.parent / f".{sample.name}"
        staged.write_bytes(sample.read_bytes())
        landed, landed_at = time.monotonic(), time.time()
        os.replace(staged, landing / sample.name)
        with psycopg.connect(leads_url, autocommit=True) as conn:
            while time.monotonic() - landed < timeout:
                row = conn.execute(
                    "SELECT counts FROM imports WHERE source_file LIKE %s AND counts IS NOT NULL", (f"%{sample.name}",)
                ).fetchone()
                if row:
                    committed = round(time.monotonic() - landed, 2)
                    return {
                        "rows": row[0]["rows_read"],
                        "drop_to_commit_s": committed,
                        **_timeline(sample.name, landed_at),
                    }
                time.sleep(0.2)
    raise RuntimeError(f"{sample.name} was not committed within {timeout} s; see {log}")
