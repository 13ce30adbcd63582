"""Read docker/compose*.yml as Compose does, without Compose: overlay merge, ``${VAR...}`` interpolation.

Why: ``docker compose config`` (v2) and ``docker-compose config`` (1.29) print the same file differently (volumes
and ports as mappings or as strings), so tests read the files themselves; ``mounts`` and ``published`` accept both
printed forms for the checks that do run a Compose tool.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariableError(KeyError):
    """A ``${NAME:?message}`` variable is unset or empty; ``str()`` is Compose's message."""

    def __str__(self) -> str:
        return str(self.args[0])


def _merge(base: Any, overlay: Any) -> Any:
    """Compose's overlay rule for the keys these files use: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {**base, **{key: _merge(base.get(key), value) for key, value in overlay.items()}}
    return overlay


def load(*names: str) -> dict[str, Any]:
    """``docker/<name>`` files parsed and merged in order, not interpolated."""
    merged: dict[str, Any] = {}
    for name in names:
        merged = _merge(merged, yaml.safe_load((DOCKER / name).read_text()))
    return merged


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` (a string, or lists and mappings of them) with every ``${...}`` replaced as Compose does.

    Raises:
        MissingVariableError: A required variable is unset (or empty, for ``:?``).
    """
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        current = env.get(name)
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("?") and unset:
            raise MissingVariableError(f"required variable {name} is missing a value: {arg}")
        if op.endswith("-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(replace, value)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def variables(value: Any) -> dict[str, str | None]:
    """``NAME -> default`` (``None`` without one) for every ``${NAME...}`` in ``value``."""
    found: dict[str, str | None] = {}
    for text in _strings(value):
        for m in _VARIABLE.finditer(text):
            found[m["name"]] = m["arg"] if m["op"] in (":-", "-") else found.get(m["name"])
    return found


def mounts(entries: Iterable[str | Mapping[str, Any]]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read only), from ``src:dst[:ro]`` strings or ``{source, target, ...}`` mappings."""
    found = {}
    for entry in entries:
        if isinstance(entry, str):
            source, target, *mode = entry.split(":")
            found[target] = (source, "ro" in ",".join(mode).split(","))
        else:
            found[entry["target"]] = (str(entry.get("source", "")), bool(entry.get("read_only", False)))
    return found


def published(entries: Iterable[str | Mapping[str, Any]]) -> dict[int, tuple[str, str]]:
    """Container port -> (host address, host port), from ``[ip:]host:container[/tcp]`` strings or mappings."""
    found = {}
    for entry in entries:
        if isinstance(entry, str):
            parts = entry.split("/")[0].split(":")
            found[int(parts[-1])] = (":".join(parts[:-2]), parts[-2] if len(parts) > 1 else "")
        else:
            found[int(entry["target"])] = (str(entry.get("host_ip", "")), str(entry.get("published", "")))
    return found


def compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1 or v2 standalone), whichever is installed first."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None
