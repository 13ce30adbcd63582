"""Print the requirements of ``pip install ".[EXTRA,...]"`` read from pyproject.toml, one per line.

The images install these before they copy the sources, so an edit of the code reuses the dependency layers
(torch alone is gigabytes) instead of downloading them again. Standard library only (it runs before anything is
installed). Usage: ``python requirements.py PYPROJECT EXTRA...``
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

_WITH_EXTRAS = re.compile(r"^\s*(?P<name>[A-Za-z0-9._-]+)\s*\[(?P<extras>[^\]]*)\]\s*$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: Iterable[str]) -> list[str]:
    """The base dependencies plus those of ``extras``, with references to the project's own extras expanded."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    found, pending, seen = list(project["dependencies"]), list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"{pyproject} has no extra {extra!r} (it has: {', '.join(optional)})")
        seen.add(extra)
        for requirement in optional[extra]:
            match = _WITH_EXTRAS.match(requirement)
            if match and _canonical(match["name"]) == _canonical(project["name"]):
                pending.extend(e.strip() for e in match["extras"].split(","))
            elif requirement not in found:
                found.append(requirement)
    return found


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
