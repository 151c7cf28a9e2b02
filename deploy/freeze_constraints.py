"""Write deploy/constraints.txt: every package the image installs, pinned at the version installed here.

Run it in the environment the suite passed in: `python deploy/freeze_constraints.py > deploy/constraints.txt`.
"""

import re
from importlib import metadata

from packaging.requirements import Requirement

ROOTS = [("import_pipeline", ()), ("dagster-docker", ())]  # what deploy/Dockerfile installs


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> dict[str, str]:
    """{distribution: version} of the roots and everything they require, extras included."""
    pinned: dict[str, str] = {}
    done: set[tuple[str, tuple[str, ...]]] = set()
    todo = list(ROOTS)
    while todo:
        name, extras = todo.pop()
        if (_key(name), extras) in done:
            continue
        done.add((_key(name), extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        pinned[_key(name)] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            wanted = ["", *list(extras)]
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in wanted):
                continue
            todo.append((requirement.name, tuple(sorted(requirement.extras))))
    pinned.pop("import-pipeline", None)
    return pinned


if __name__ == "__main__":
    print("# The versions the test suite passed with; deploy/Dockerfile installs with `-c deploy/constraints.txt`.")
    print("# Regenerate: python deploy/freeze_constraints.py > deploy/constraints.txt")
    for name, version in sorted(closure().items()):
        print(f"{name}=={version}")
