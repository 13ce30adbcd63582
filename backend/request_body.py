r"""Request bytes -> a checked JSON object, so hostile or careless bodies get a 400 naming the field, never a 500.

The body's size is capped by Flask (``MAX_CONTENT_LENGTH``, a 413) before it is read. Here it must parse, be an
object, nest no deeper than ``MAX_DEPTH`` (deeper JSON would exhaust the recursion limit further in), and hold only
text that encodes as UTF-8 (a lone surrogate such as ``"\ud800"`` is valid JSON but cannot be stored or re-encoded).
"""

from __future__ import annotations

import json
from typing import Any

from backend.errors import BadRequest

__all__ = ["MAX_DEPTH", "check_json", "parse_json_object"]

MAX_DEPTH = 64


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object.

    Raises:
        BadRequest: Not JSON, not an object, nested deeper than ``MAX_DEPTH``, or holding a lone surrogate; the
            message names the place (``tasks[0].data.image``).
    """
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise BadRequest(f"request body must be JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    check_json(body)
    return body


def check_json(value: Any, where: str = "") -> None:
    """Walk parsed JSON without recursion: depth and encodable text, naming the first bad place.

    Also for JSON that arrives inside a string (Label Studio sends ``extra_params`` as one).

    Raises:
        BadRequest: Deeper than ``MAX_DEPTH`` or a lone surrogate.
    """
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"{where or 'request body'} nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, dict):
            for key, item in value.items():
                place = f"{where}.{key}" if where else key
                _check_text(key, place)
                stack.append((item, place, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = where.encode("utf-8", "backslashreplace").decode()
        raise BadRequest(f"{shown}: text holds a lone surrogate (invalid Unicode)") from None
