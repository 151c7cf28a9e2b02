"""The landing sensor, evaluated against a real landing folder and a real Dagster instance."""

import json
import os
import shutil
import socket

import dagster as dg

from import_pipeline.config import MAX_FILES_PER_TICK
from import_pipeline.definitions import defs
from import_pipeline.landing import content_hash, landed_files_partitions_def, partition_key
from import_pipeline.sensors import landing_sensor
from import_pipeline.state import StateFolder

LEADS = "Company,Email\nAcme,ann@acme.com\n"


def _tick(pipeline, cursor):
    context = dg.build_sensor_context(
        instance=pipeline.instance, cursor=cursor, definitions=defs, resources={"state": _state(pipeline)}
    )
    return landing_sensor(context)


def _state(pipeline):
    return StateFolder(home=str(pipeline.home))


def _ticks(pipeline, n, cursor=None):
    """Run n ticks; return the last result and all run requests made."""
    requests = []
    for _ in range(n):
        result = _tick(pipeline, cursor)
        cursor = result.cursor
        requests += result.run_requests or []
        for add in result.dynamic_partitions_requests or []:
            pipeline.instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
    return result, requests


def test_landing_sensor_new_file_becomes_one_partition_and_run(pipeline):
    path = pipeline.landing / "leads 2026.csv"
    path.write_text(LEADS)

    first = _tick(pipeline, None)
    assert not first.run_requests
    assert "still being written: leads 2026.csv" in first.skip_reason.skip_message

    second = _tick(pipeline, first.cursor)
    key = partition_key("leads 2026.csv", content_hash(path))
    assert key == f"leads_2026.csv@{content_hash(path)[:16]}"
    assert [(r.partition_key, r.run_key) for r in second.run_requests] == [(key, key)]
    assert second.run_requests[0].run_config["ops"]["leads"]["ops"]["parse"]["config"]["source_path"] == str(path)
    assert [list(r.partition_keys) for r in second.dynamic_partitions_requests] == [[key]]

    third = _tick(pipeline, second.cursor)
    assert not third.run_requests
    assert third.skip_reason.skip_message == "no new files"


def test_landing_sensor_same_bytes_renamed_start_nothing(pipeline):
    (pipeline.landing / "a.csv").write_text(LEADS)
    result, requests = _ticks(pipeline, 2)
    assert len(requests) == 1

    shutil.copy(pipeline.landing / "a.csv", pipeline.landing / "copy of a.csv")
    result, requests = _ticks(pipeline, 2, result.cursor)

    assert requests == []
    assert "copy of a.csv: same bytes as an earlier file" in result.skip_reason.skip_message
    assert pipeline.instance.get_dynamic_partitions(landed_files_partitions_def.name) == [
        partition_key("a.csv", content_hash(pipeline.landing / "a.csv"))
    ]


def test_landing_sensor_half_written_file_waits(pipeline):
    path = pipeline.landing / "growing.csv"
    with path.open("w") as f:
        f.write("Company,Email\n")
        f.flush()
        result = _tick(pipeline, None)
        f.write("Acme,ann@acme.com\n")
        f.flush()
        result = _tick(pipeline, result.cursor)
        assert not result.run_requests, "the size changed since the previous tick"
    # Unchanged since the previous tick: complete.
    result = _tick(pipeline, result.cursor)
    assert [r.partition_key for r in result.run_requests] == [partition_key("growing.csv", content_hash(path))]


def test_landing_sensor_ignores_in_progress_hidden_dirs_and_outside_links(pipeline, tmp_path):
    (pipeline.landing / "upload.csv.part").write_text(LEADS)
    (pipeline.landing / ".hidden.csv").write_text(LEADS)
    (pipeline.landing / "folder.csv").mkdir()
    outside = tmp_path / "outside.csv"
    outside.write_text("Company,Email\nOutside,o@x.com\n")
    os.symlink(outside, pipeline.landing / "link-out.csv")
    (pipeline.landing / "real.csv").write_text(LEADS)
    os.symlink(pipeline.landing / "real.csv", pipeline.landing / "link-in.csv")

    _result, requests = _ticks(pipeline, 3)

    # The inside link has the same bytes as real.csv, so only one of the two starts a run.
    assert [r.tags["import_pipeline/source_file"] for r in requests] in (["real.csv"], ["link-in.csv"])


def test_landing_sensor_cursor_stays_small(pipeline):
    """250 files at once: at most MAX_FILES_PER_TICK per tick, each exactly once, the cursor bounded."""
    for i in range(250):
        (pipeline.landing / f"f{i:03}.csv").write_text(f"Company,Email\nC{i},c{i}@x.com\n")

    cursor, requested, cursor_sizes = None, [], []
    for _ in range(6):  # each batch is seen once, then taken on the next tick
        result, requests = _ticks(pipeline, 1, cursor)
        cursor = result.cursor
        assert len(requests) <= MAX_FILES_PER_TICK
        requested += [r.tags["import_pipeline/source_file"] for r in requests]
        cursor_sizes.append(len(cursor))

    assert sorted(requested) == [f"f{i:03}.csv" for i in range(250)]
    assert max(cursor_sizes) < 60 * MAX_FILES_PER_TICK, cursor_sizes
    assert len(result.cursor) < 200, result.cursor
    (pipeline.landing / "late.csv").write_text(LEADS)
    result, requests = _ticks(pipeline, 2, result.cursor)
    assert [r.tags["import_pipeline/source_file"] for r in requests] == ["late.csv"]


def test_landing_sensor_requests_pass_the_daemons_validation(pipeline):
    (pipeline.landing / "a.csv").write_text(LEADS)
    first = _tick(pipeline, None)
    context = dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=first.cursor,
        definitions=defs,
        instance_ref=pipeline.instance.get_ref(),
        resources={"state": _state(pipeline)},
    )

    data = landing_sensor.evaluate_tick(context)

    assert [r.partition_key for r in data.run_requests] == [
        partition_key("a.csv", content_hash(pipeline.landing / "a.csv"))
    ]


def _daemon_tick(pipeline, cursor, log_key):
    """A tick as the daemon evaluates it: requests validated, the sensor's log captured under `log_key`; its lines."""
    with dg.SensorEvaluationContext(
        instance_ref=pipeline.instance.get_ref(),
        cursor=cursor,
        log_key=log_key,
        instance=pipeline.instance,
        definitions=defs,
        sensor_name=landing_sensor.name,
        resources={"state": _state(pipeline)},
    ) as context:
        data = landing_sensor.evaluate_tick(context)
    captured = pipeline.instance.compute_log_manager.get_log_data(log_key).stderr or b""
    return data, [json.loads(line)["msg"] for line in captured.decode().splitlines() if line]


def test_landing_sensor_names_each_odd_entry_and_imports_the_valid_file(pipeline, tmp_path, monkeypatch):
    landing = pipeline.landing
    valid = landing / "valid.csv"
    valid.write_text(LEADS)
    # valid.csv has been seen once: a file counts once it is unchanged between two ticks.
    seen, _ = _daemon_tick(pipeline, None, ["landing_sensor", "seen"])
    assert seen.skip_message == "still being written: valid.csv"

    os.symlink("loop-b.csv", landing / "loop-a.csv")
    os.symlink("loop-a.csv", landing / "loop-b.csv")
    os.symlink("missing.csv", landing / "dangling.csv")
    (tmp_path / "outside.csv").write_text(LEADS)
    os.symlink(tmp_path / "outside.csv", landing / "link-out.csv")
    (landing / "two\nlines.csv").write_text("Company,Email\nTwo,two@x.com\n")
    (landing / os.fsdecode(b"caf\xe9.csv")).write_text("Company,Email\nCafe,cafe@x.com\n")
    os.mkfifo(landing / "pipe.csv")  # a FIFO nobody writes to: opening it for reading would block the tick
    (landing / "folder").mkdir()
    (landing / "folder" / "inner.csv").write_text(LEADS)
    locked = landing / "locked.csv"
    locked.write_text("Company,Email\nLocked,locked@x.com\n")
    locked.chmod(0)
    monkeypatch.chdir(landing)  # a relative name: socket paths are limited to 108 bytes
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("socket.csv")
    try:
        tick, lines = _daemon_tick(pipeline, seen.cursor, ["landing_sensor", "odd"])
        after, after_lines = _daemon_tick(pipeline, tick.cursor, ["landing_sensor", "after"])
    finally:
        sock.close()

    assert [r.partition_key for r in tick.run_requests] == [partition_key("valid.csv", content_hash(valid))]
    odd = {
        "loop-a.csv: a symbolic link loop",
        "loop-b.csv: a symbolic link loop",
        "dangling.csv: a symbolic link to nothing (missing.csv)",
        "link-out.csv: a symbolic link to outside the landing folder",
        "two\\nlines.csv: its name holds a line break or another control character: rename it",
        "caf\\xe9.csv: its name is not valid UTF-8: rename it",
        "pipe.csv: a named pipe (FIFO), not a file: never opened",
        "socket.csv: a socket, not a file",
        "folder: a folder: only files directly in the landing folder are imported",
    }
    if os.geteuid() == 0:
        # root reads through chmod 000: the file is an ordinary new file here, imported on the next tick.
        assert [line for line in lines if line not in odd] == ["waiting for files still being written: locked.csv"]
        assert [r.partition_key for r in after.run_requests] == [partition_key("locked.csv", content_hash(locked))]
    else:
        odd.add("locked.csv: cannot be read: Permission denied")
        assert [line for line in lines if line not in odd] == []
        assert after.skip_message == "no new files"
    assert odd <= set(lines), sorted(odd - set(lines))
    assert all("\n" not in line for line in lines)
    assert not odd & set(after_lines), "each odd entry is named once, not on every tick"
