"""A site directory holding only what ``pip install ".[extras]"`` would bring, built from the installed packages.

Why: the test extra installs packages (sentencepiece, protobuf, pytest, ...) that a user's ``.[all]`` does not, so
an adapter can pass the whole suite and still fail in ``make serve`` or the Docker image. Linking the already
installed distributions of the dependency closure into a fresh directory reproduces a user's install without a
second multi-GB torch download.
"""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["MissingDistributionError", "dependency_closure", "link_site", "project_requirements"]


class MissingDistributionError(LookupError):
    """A required distribution is not installed here, so the closure cannot be reproduced."""


def project_requirements(pyproject: Path, extras: Iterable[str]) -> list[Requirement]:
    """The requirements of ``pip install ".[extras]"`` from ``pyproject``, self-references expanded.

    Read from the checkout's ``pyproject.toml`` rather than the installed metadata, which may be another
    checkout's (an editable install elsewhere) or stale.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    name, optional = canonicalize_name(project["name"]), project.get("optional-dependencies", {})
    found = [Requirement(r) for r in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise KeyError(f"{pyproject} has no extra {extra!r}")
        for requirement in map(Requirement, optional[extra]):
            if canonicalize_name(requirement.name) == name:
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    """Whether a metadata line applies to a distribution installed with ``extras`` (``""``: no extra)."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in extras)


def dependency_closure(requirements: Iterable[Requirement]) -> dict[str, metadata.Distribution]:
    """Every installed distribution that ``requirements`` pull in, recursively, honouring extras and markers.

    Raises:
        MissingDistributionError: A required distribution is not installed (the names are listed).
    """
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    missing: set[str] = set()
    pending = [r for r in requirements if _applies(r, [""])]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        new = [extra for extra in ("", *sorted(requirement.extras)) if (name, extra) not in done]
        if not new:
            continue
        try:
            dist = found.get(name) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(name)
            continue
        found[name] = dist
        done.update((name, extra) for extra in new)
        pending.extend(child for child in map(Requirement, dist.requires or ()) if _applies(child, new))
    if missing:
        raise MissingDistributionError(f"not installed here: {', '.join(sorted(missing))}")
    return found


def _top_level_owners() -> dict[str, set[str]]:
    """Top-level entry of site-packages -> the installed distributions whose RECORD has files in it."""
    owners: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or ():
            if not str(file).startswith(".."):
                owners.setdefault(file.parts[0], set()).add(name)
    return owners


def link_site(distributions: Iterable[metadata.Distribution], site: Path) -> int:
    """Symlink each distribution's files (its RECORD, ``.dist-info`` included) into ``site``; return the links made.

    A top-level folder that no other installed distribution has files in is linked whole (torch alone holds
    thousands of files); shared ones (namespace packages such as ``nvidia/``) are linked file by file, so nothing
    of a distribution outside the closure leaks in. Files outside site-packages (scripts under ``../../bin``) are
    left out: imports never need them.
    """
    owners = _top_level_owners()
    linked = 0
    for dist in distributions:
        if dist.files is None:
            raise MissingDistributionError(f"{dist.metadata['Name']} has no RECORD: its files are unknown")
        name = canonicalize_name(dist.metadata["Name"])
        paths = {Path(str(f)) for f in dist.files if not str(f).startswith("..")}
        whole = {p.parts[0] for p in paths if owners.get(p.parts[0]) == {name}}
        paths = {Path(top) for top in whole} | {p for p in paths if p.parts[0] not in whole}
        for relative in sorted(paths):
            source, target = Path(dist.locate_file(relative)), site / relative
            if target.exists() or not source.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source, target_is_directory=source.is_dir())
            linked += 1
    return linked
