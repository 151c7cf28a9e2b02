"""Sensors: each completely written file in the landing folder becomes one partition and one run."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from import_pipeline.bucket import BucketStore
from import_pipeline.config import IN_PROGRESS_SUFFIXES, MAX_FILES_PER_TICK, SENSOR_INTERVAL_SECONDS
from import_pipeline.history import import_summary, is_import
from import_pipeline.jobs import import_leads_job
from import_pipeline.landing import (
    LANDED_FILES,
    content_hash,
    hash_of_key,
    landed_files_partitions_def,
    landing_entries,
    partition_key,
    sheet_of_key,
    shown,
    unreadable,
)
from import_pipeline.load import OUTCOME_TAG_PREFIX
from import_pipeline.notify import Notifier
from import_pipeline.parse import ParseConfig
from import_pipeline.possible_duplicates import QUEUED_COUNTS
from import_pipeline.resolve_duplicates import resolve_duplicates_job
from import_pipeline.run_config import ASSET_NODE
from import_pipeline.state import StateFolder


@dataclass
class LandingCursor:
    """What the sensor remembers, small whatever the folder holds.

    `high_water` is an inode-change time (ctime, which moves on rename and copy, unlike mtime):
    every file changed at or before it has been handled. `handled` lists the few files handled above
    it while an older file was still being written; `pending` holds (size, mtime) of files seen once,
    which are taken on the next tick if unchanged.
    """

    high_water: int = 0
    handled: dict[str, int] = field(default_factory=dict)
    pending: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "LandingCursor":
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps({"high_water": self.high_water, "handled": self.handled, "pending": self.pending})


@dataclass
class LandingScan:
    """One tick's view of the landing folder: files to import, the cursor after it, entries skipped and why."""

    ready: list[os.DirEntry]
    cursor: LandingCursor
    skipped: list[str] = field(default_factory=list)


def scan_landing(landing: Path, cursor: LandingCursor, limit: int = MAX_FILES_PER_TICK) -> LandingScan:
    """Files that stayed the same since the previous tick, and the cursor after taking them.

    At most `limit` entries, the oldest first, are looked at per tick: the tick stays short and the
    cursor small however many files land at once; the rest wait for the next ticks. An entry that is
    no file to import (a link loop, a pipe, a folder, an unreadable file…) is named once, with why, and
    handled like an imported one: it is looked at again only once it changes.
    """
    fresh = []
    for examined in landing_entries(landing):
        name, status = examined.entry.name, examined.status
        if status.st_ctime_ns > cursor.high_water and cursor.handled.get(name) != status.st_ctime_ns:
            signature = [status.st_size, status.st_mtime_ns]
            fresh.append((status.st_ctime_ns, name, examined, signature))
    fresh.sort(key=lambda item: item[:2])
    # The high-water mark must stay below the files left for later ticks.
    ceiling = fresh[limit][0] - 1 if len(fresh) > limit else None
    fresh = fresh[:limit]

    ready, pending, skipped = [], {}, []
    for _, name, examined, signature in fresh:
        # Only the entries new to this tick (at most `limit`) are opened, non-blocking and never read: the
        # rest of the folder is only listed.
        problem = examined.problem or unreadable(examined.entry.path)
        if problem:
            skipped.append(f"{shown(name)}: {problem}")
        elif cursor.pending.get(name) == signature:
            ready.append(examined.entry)
        else:
            pending[name] = signature

    handled_now = {name: ctime for ctime, name, _, _ in fresh if name not in pending} | cursor.handled
    oldest_pending = min((ctime for ctime, name, _, _ in fresh if name in pending), default=None)
    below = [c for c in handled_now.values() if oldest_pending is None or c < oldest_pending]
    high_water = max([cursor.high_water, *below])
    if ceiling is not None:
        high_water = max(cursor.high_water, min(high_water, ceiling))
    handled = {name: c for name, c in handled_now.items() if c > high_water}
    return LandingScan(ready, LandingCursor(high_water, handled, pending), skipped)


@dg.sensor(
    job=import_leads_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_sensor(context: dg.SensorEvaluationContext, state: StateFolder):
    """Add a partition and request a run for every new, completely written file in the landing folder."""
    scan = scan_landing(state.landing_path, LandingCursor.parse(context.cursor))
    # A sheet imported by name is not the file's import: the first sheet still is when the file lands.
    known = {hash_of_key(k) for k in context.instance.get_dynamic_partitions(LANDED_FILES) if not sheet_of_key(k)}
    requests, skipped = [], list(scan.skipped)
    for entry in scan.ready:
        try:
            digest = content_hash(Path(entry.path))
        except OSError as e:  # removed, or made unreadable, since the scan
            skipped.append(f"{shown(entry.name)}: cannot be read: {e.strerror}")
            continue
        key = partition_key(entry.name, digest)
        if hash_of_key(key) in known:
            skipped.append(f"{entry.name}: same bytes as an earlier file, already partition ...@{hash_of_key(key)}")
            continue
        known.add(hash_of_key(key))
        requests.append(
            dg.RunRequest(
                run_key=key,
                partition_key=key,
                run_config=dg.RunConfig(ops={ASSET_NODE: {"ops": {"parse": ParseConfig(source_path=entry.path)}}}),
                tags={"import_pipeline/source_file": entry.name},
            )
        )
    for reason in skipped:
        context.log.info(reason)
    waiting = sorted(scan.cursor.pending)
    named = ", ".join(waiting[:10]) + (f" and {len(waiting) - 10:,} more" if len(waiting) > 10 else "")
    if waiting:
        context.log.info(f"waiting for files still being written: {named}")
    if not requests:
        why = [*skipped, f"still being written: {named}"] if waiting else skipped or ["no new files"]
        # One line per entry, as in the log.
        return dg.SensorResult(skip_reason=dg.SkipReason("\n".join(why)), cursor=scan.cursor.dump())
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            landed_files_partitions_def.build_add_request([r.partition_key or "" for r in requests])
        ],
        cursor=scan.cursor.dump(),
    )


BUCKET_PAGE = 100


@dg.sensor(job=import_leads_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def bucket_sensor(context: dg.SensorEvaluationContext, bucket: BucketStore):
    """Add a partition and request a run for every new object, or new version of one, in the bucket.

    The cursor is the last key listed: each tick continues the listing where the previous one stopped,
    and starts a new pass over the bucket once the end is reached.
    """
    if not bucket.bucket:
        return dg.SkipReason("no bucket configured (set IMPORT_PIPELINE_S3_BUCKET)")
    known = set(context.instance.get_dynamic_partitions(LANDED_FILES))
    start_after, listed, requests = context.cursor or "", 0, []
    while listed < bucket.max_objects_per_tick:
        wanted = min(BUCKET_PAGE, bucket.max_objects_per_tick - listed)
        objects = bucket.list_page(start_after, wanted)
        for obj in objects:
            listed += 1
            start_after = obj["Key"]
            name = obj["Key"].rsplit("/", 1)[-1]
            if not name or name.startswith(".") or name.lower().endswith(IN_PROGRESS_SUFFIXES):
                continue
            etag = obj["ETag"].strip('"')
            key = partition_key(f"{bucket.bucket}/{obj['Key']}", etag)
            if key in known:
                continue
            known.add(key)
            requests.append(
                dg.RunRequest(
                    run_key=key,
                    partition_key=key,
                    run_config=dg.RunConfig(
                        ops={
                            ASSET_NODE: {
                                "ops": {"parse": ParseConfig(source_path=f"s3://{bucket.bucket}/{obj['Key']}#{etag}")}
                            }
                        }
                    ),
                    tags={"import_pipeline/source_file": f"s3://{bucket.bucket}/{obj['Key']}"},
                )
            )
        if len(objects) < wanted:
            start_after = ""  # the end of the bucket: the next tick starts a new pass
            break
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new objects among {listed} listed"), cursor=start_after)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            landed_files_partitions_def.build_add_request([r.partition_key or "" for r in requests])
        ],
        cursor=start_after,
    )


ERROR_TAG = "import_pipeline/error"
# Dagster caps what a tag shows in the Runs list; the run page and `history` have the whole reason.
ERROR_TAG_CHARS = 200


def _notify(context: dg.RunStatusSensorContext, notifier: Notifier, event: str) -> None:
    if not is_import(context.dagster_run):
        return
    summary = import_summary(context.instance, context.dagster_run.run_id)
    if summary["error"]:
        # The Runs list shows tags: why an import failed, at a glance, in the words of its first failed step.
        error = summary["error"]
        shown = error if len(error) <= ERROR_TAG_CHARS else error[: ERROR_TAG_CHARS - 1] + "…"
        context.instance.add_run_tags(context.dagster_run.run_id, {ERROR_TAG: shown})
    if summary["status"] == "planned":
        event = "import planned"  # nothing committed: the plan report says what the load would change
    outcome = notifier.send(event, summary, context.log)
    context.log.info(f"{event} notification for run {context.dagster_run.run_id}: {outcome}")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def import_succeeded_sensor(context: dg.RunStatusSensorContext, notifier: Notifier):
    """Notify that an import committed, with its counts."""
    _notify(context, notifier, "import succeeded")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=resolve_duplicates_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def possible_duplicates_sensor(context: dg.RunStatusSensorContext):
    """After an import that queued possible duplicates, refresh the possible_duplicates asset (a `show` run)."""
    run = context.dagster_run
    if not is_import(run) or not any(OUTCOME_TAG_PREFIX + k in run.tags for k in QUEUED_COUNTS):
        return dg.SkipReason(f"run {run.run_id} queued no possible duplicates")
    return dg.RunRequest(run_key=f"queued-by-{run.run_id}", tags={"import_pipeline/queued_by_run": run.run_id})


# Every job of the code location: an import launched from the asset catalog runs as Dagster's `__ASSET_JOB`.
@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING)
def import_failed_sensor(context: dg.RunFailureSensorContext, notifier: Notifier):
    """Notify that an import failed, with the reason and a link to re-execute it."""
    _notify(context, notifier, "import failed")
