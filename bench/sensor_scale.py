"""T4: one landing-sensor tick over a folder of 10,000 files, half of them imported before.

Ticks run as the daemon runs them (`evaluate_tick` on the real instance), until every new file has
been requested; the slowest tick and the largest cursor are reported, with the cursor size for a
folder ten times smaller to show it does not grow with the folder.
"""

import time
from pathlib import Path

import dagster as dg

from import_pipeline.definitions import defs
from import_pipeline.landing import content_hash, landed_files_partitions_def, partition_key
from import_pipeline.sensors import landing_sensor
from import_pipeline.state import StateFolder


def _fill(landing: Path, files: int, imported_share: float, instance: dg.DagsterInstance, salt: str) -> int:
    """Write `files` small lead files; register the first share of them as imported partitions."""
    landing.mkdir(parents=True, exist_ok=True)
    imported = []
    for i in range(files):
        path = landing / f"leads_{i:05}.csv"
        path.write_text(f"Company,Email\nCompany {i},lead{i}@{salt}.example.com\n")
        if i < files * imported_share:
            imported.append(partition_key(path.name, content_hash(path)))
    instance.add_dynamic_partitions(landed_files_partitions_def.name, imported)
    return files - len(imported)


def _drain(instance: dg.DagsterInstance, home: Path, new_files: int) -> dict:
    """Tick until every new file is requested; the slowest tick and the largest cursor."""
    cursor, requested, ticks, slowest, largest = None, 0, 0, 0.0, 0
    while requested < new_files and ticks < 10 * new_files:
        context = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=defs,
            instance_ref=instance.get_ref(),
            resources={"state": StateFolder(home=str(home))},
        )
        started = time.perf_counter()
        data = landing_sensor.evaluate_tick(context)
        slowest = max(slowest, time.perf_counter() - started)
        ticks += 1
        requested += len(data.run_requests or [])
        for add in data.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
        cursor = data.cursor
        largest = max(largest, len(cursor or ""))
    return {
        "ticks": ticks,
        "requested": requested,
        "slowest_tick_s": round(slowest, 3),
        "largest_cursor_bytes": largest,
    }


def sensor_scale(home: Path, files: int = 10_000) -> dict:
    """T4 on a fresh landing folder under `home` (the running bench instance)."""
    with dg.DagsterInstance.get() as instance:
        big_home, small_home = home / "t4_big", home / "t4_small"
        big = _drain(instance, big_home, _fill(big_home / "landing", files, 0.5, instance, "big"))
        small = _drain(instance, small_home, _fill(small_home / "landing", files // 10, 0.5, instance, "small"))
    return {
        "files": files,
        "already_imported": files // 2,
        **big,
        f"largest_cursor_bytes_{files // 10}_files": small["largest_cursor_bytes"],
    }
