"""One image in, Roboflow's JSON answer out: endpoint URLs, retries with backoff, and errors a user can act on.

Enters: a base64 JPEG, the model id, the API key and the call's knobs. Leaves: the decoded JSON object, or a
``RoboflowError`` whose message says what to fix. The key travels only in the query string Roboflow documents
(``?api_key=``) and never appears in a message: requests' own exceptions (which quote the URL) are replaced by
ours, and an error body that echoes the key has it masked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from model_adapters.base import AdapterError

__all__ = ["LEGACY_HOSTS", "SERVERLESS_URL", "Endpoint", "RoboflowError", "infer", "parse_model_id"]

SERVERLESS_URL = "https://serverless.roboflow.com"
# The task-specific hosts of Roboflow's legacy hosted API (the task is the control's: boxes, polygons, choices).
LEGACY_HOSTS: Mapping[str, str] = {
    "detection": "https://detect.roboflow.com",
    "segmentation": "https://outline.roboflow.com",
    "classification": "https://classify.roboflow.com",
}
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 20.0  # a longer Retry-After is cut to this; the request's budget bounds the rest
_BACKOFF_S = 0.5  # first pause without Retry-After; doubles per try
_MODEL_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?([A-Za-z0-9][\w.-]*)/(\d{1,9})")


class RoboflowError(AdapterError):
    """Roboflow refused or failed a call; the message names the cause and the setting to change."""


def parse_model_id(model_id: str) -> tuple[str, str]:
    """``"<project>/<version>"`` or ``"<workspace>/<project>/<version>"`` -> (project, version).

    Raises:
        ValueError: Anything else (the message shows the expected form).
    """
    match = _MODEL_ID.fullmatch(model_id.strip())
    if match is None:
        raise ValueError(
            f'model_id must be "<project>/<version>" as on the model\'s Roboflow Universe page, like '
            f'"hard-hat-sample-txcpu/2", got {model_id!r}'
        )
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class Endpoint:
    """Where a model answers and how it reads thresholds.

    Attributes:
        url: ``<base>/<project>/<version>``.
        percent: Thresholds in percent (the legacy hosts) rather than fractions (serverless, inference servers).
    """

    url: str
    percent: bool

    @classmethod
    def of(cls, api: str, task: str, model_id: str, server_url: str | None) -> Endpoint:
        """The endpoint for ``api`` (``serverless``, ``legacy`` or ``self_hosted`` at ``server_url``)."""
        project, version = parse_model_id(model_id)
        if api == "legacy":
            base = LEGACY_HOSTS[task]
        elif api == "self_hosted":
            if not server_url:
                raise ValueError("api self_hosted needs ROBOFLOW_API_URL (the inference server's URL) on the server")
            base = server_url.rstrip("/")
        else:
            base = SERVERLESS_URL
        return cls(f"{base}/{project}/{version}", percent=api == "legacy")


def infer(
    session: requests.Session,
    endpoint: Endpoint,
    image_b64: str,
    *,
    api_key: str,
    model_id: str,
    query: Mapping[str, float],
    timeout: float,
    retries: int,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """POST one base64 image; retry 429, 5xx, timeouts and dropped connections up to ``retries`` more times.

    Args:
        session: HTTP session (connection reuse).
        endpoint: Where the model answers.
        image_b64: The image, base64-encoded.
        api_key: Sent as ``api_key`` in the query, never in a message.
        model_id: For messages.
        query: Threshold knobs as fractions (``confidence``, ``overlap``); sent in the endpoint's scale.
        retries: Further tries after a retryable failure.
        timeout: Seconds per try (connect and read).
        sleep: Waits between tries (tests pass a recorder).

    Raises:
        RoboflowError: The key was refused, the model does not exist, the tries ran out, or the answer is not JSON.
    """
    scale = 100.0 if endpoint.percent else 1.0
    params = {"api_key": api_key, **{k: round(v * scale, 4) for k, v in query.items()}}
    failure, pause = "", 0.0
    for attempt in range(retries + 1):
        if attempt:
            sleep(pause)
        try:
            response = session.post(
                endpoint.url,
                params=params,
                data=image_b64,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=timeout,
                allow_redirects=False,  # the key is in the query: never carried to another host
            )
        except requests.Timeout:
            failure, pause = f"no answer within {timeout:g} s", _backoff(attempt, None)
            continue
        except requests.RequestException as exc:  # its message quotes the URL, key included: not passed on
            failure, pause = f"connection failed ({type(exc).__name__})", _backoff(attempt, None)
            continue
        if response.status_code in _RETRY_STATUSES:
            failure = f"HTTP {response.status_code}{_reason(response, api_key)}"
            pause = _backoff(attempt, response.headers.get("Retry-After"))
            continue
        return _answer(response, api_key, model_id)
    tries = f"{retries + 1} tries" if retries else "1 try"
    raise RoboflowError(f"Roboflow did not answer for model {model_id} after {tries}: {failure}")


def _answer(response: requests.Response, api_key: str, model_id: str) -> dict[str, Any]:
    status = response.status_code
    if status in (401, 403):
        raise RoboflowError(
            f"Roboflow refused the API key for model {model_id} (HTTP {status}{_reason(response, api_key)}): set "
            "api_key in the project's extra_params, or ROBOFLOW_API_KEY on the server, to a key of the workspace "
            "that owns the model (any workspace's key for a public Universe model)"
        )
    if status == 404:
        raise RoboflowError(
            f"Roboflow has no model {model_id} (HTTP 404{_reason(response, api_key)}): check model_id, "
            '"<project>/<version>" as on the model\'s Universe page'
        )
    if not 200 <= status < 300:
        raise RoboflowError(
            f"Roboflow refused the request for model {model_id} (HTTP {status}{_reason(response, api_key)})"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RoboflowError(f"Roboflow's answer for model {model_id} is not a JSON object")
    return body


def _reason(response: requests.Response, api_key: str) -> str:
    """``": <message>"`` from an error body (``message``, ``detail`` or ``error``), the key masked; else ``""``."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    message = next((body[k] for k in ("message", "detail", "error") if isinstance(body.get(k), str)), "")
    message = message.replace(api_key, "[REDACTED]")[:200] if api_key else message[:200]
    return f": {message}" if message else ""


def _backoff(attempt: int, retry_after: str | None) -> float:
    """Seconds before the next try: ``Retry-After`` (seconds) when given, else 0.5, 1, 2 ... s; at most 20 s."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), _MAX_RETRY_AFTER_S)
        except ValueError:
            pass  # an HTTP date: fall back to the exponential pause
    return min(_BACKOFF_S * 2**attempt, _MAX_RETRY_AFTER_S)
