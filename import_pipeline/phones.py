"""Phone numbers to E.164 with the phonenumbers package, spread over processes for large files.

A module of its own that imports nothing heavy: helper processes run it as `python -m` and start in a
fraction of a second.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import phonenumbers

# Below this many distinct numbers, starting helpers costs more than it saves (about 50 µs a number).
PARALLEL_FROM = 100_000


def e164_numbers(raw_numbers: list[str], region: str) -> dict[str, str]:
    """raw -> E.164 for the numbers phonenumbers parses and finds valid (`region` for local numbers)."""
    e164 = {}
    for raw in raw_numbers:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            e164[raw] = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


def _in_helper(raw_numbers: list[str], region: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "import_pipeline.phones", region],
        input=json.dumps(raw_numbers), capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout)


def e164_numbers_parallel(raw_numbers: list[str], region: str) -> dict[str, str]:
    """`e164_numbers` on every core when there are enough numbers: the library is pure Python."""
    workers = min(os.cpu_count() or 1, 8)
    if workers == 1 or len(raw_numbers) < PARALLEL_FROM:
        return e164_numbers(raw_numbers, region)
    chunks = [raw_numbers[i::workers] for i in range(workers)]
    # Helper processes, not multiprocessing: its children re-run the parent's __main__ (the dagster CLI).
    with ThreadPoolExecutor(workers - 1) as pool:
        helpers = [pool.submit(_in_helper, chunk, region) for chunk in chunks[1:]]
        e164 = e164_numbers(chunks[0], region)
        for helper in helpers:
            e164 |= helper.result()
    return e164


if __name__ == "__main__":
    json.dump(e164_numbers(json.load(sys.stdin), sys.argv[1]), sys.stdout)
