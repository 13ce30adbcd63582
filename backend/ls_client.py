"""Credentials for one Label Studio instance: legacy tokens and Personal Access Tokens.

A legacy token goes out as ``Authorization: Token <t>``. A Personal Access Token is a JWT refresh token:
it is exchanged at ``/api/token/refresh/`` for a short-lived access token sent as ``Bearer``; the access
token is cached until shortly before it expires and refreshed once more on a 401. Credentials are only
ever attached to requests whose destination is this Label Studio's origin (``backend.outbound``).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from backend import outbound

__all__ = ["LabelStudioAPIError", "LabelStudioClient", "is_jwt"]

_ACCESS_CACHE: dict[tuple[str, str], tuple[str, float]] = {}
_ACCESS_LOCK = threading.Lock()
_EXPIRY_MARGIN_S = 30.0


def is_jwt(token: str) -> bool:
    """Whether ``token`` looks like a JWT (a Personal Access Token) rather than a 40-char legacy token."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return isinstance(header, dict) and "alg" in header


def _jwt_expiry(token: str) -> float:
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (ValueError, KeyError, TypeError):
        return time.time() + 60.0  # unknown lifetime: refresh again soon


class LabelStudioAPIError(RuntimeError):
    """A Label Studio API call failed; the message says which call and what Label Studio answered."""


class LabelStudioClient:
    """Authenticated access to one Label Studio instance.

    Raises ``outbound.UnsafeURL`` (a ``ValueError``) for a base URL that is not a plain ``http(s)`` origin.

    Args:
        base_url: e.g. ``http://localhost:8080`` (no trailing slash needed).
        token: Legacy API token or Personal Access Token; ``None`` sends no credentials.
        session: Shared HTTP session.
        timeout: Seconds for the token refresh call.
    """

    def __init__(self, base_url: str, token: str | None, session: requests.Session, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.session = session
        self.timeout = timeout
        self.origin = outbound.origin_of(session, self.base_url)

    def url(self, path: str) -> str:
        """Absolute URL for a path on this instance (``/data/upload/1/x.jpg``)."""
        return self.base_url + "/" + path.lstrip("/")

    def media(self, prepared_url: str) -> bool:
        """Whether a URL on this instance is one of its media paths, the only ones task images may name.

        ``/data/...`` (uploads, local files) and the presign endpoint prelabel builds itself; anything else (the API)
        is never fetched with the token, so a task cannot make prelabel read Label Studio's API. Dot segments and
        encoded slashes or dots are refused outright: servers may normalise them into another path.
        """
        path = urlsplit(prepared_url).path
        prefix = urlsplit(self.base_url).path.rstrip("/")
        if not path.startswith(prefix + "/") or re.search(r"%2[eEfF]|%5[cC]|/\.\.?(/|$)", path):
            return False
        path = path[len(prefix) :]
        return path.startswith("/data/") or re.fullmatch(r"/tasks/\d+/presign/", path) is not None

    def headers(self, *, refresh: bool = False) -> dict[str, str]:
        """The ``Authorization`` header for this instance; ``refresh`` forces a new PAT access token."""
        if not self.token:
            return {}
        if not is_jwt(self.token):
            return {"Authorization": f"Token {self.token}"}
        return {"Authorization": f"Bearer {self._access_token(refresh)}"}

    def _access_token(self, refresh: bool) -> str:
        key = (self.base_url, self.token or "")
        with _ACCESS_LOCK:
            cached = _ACCESS_CACHE.get(key)
            if cached and not refresh and cached[1] - _EXPIRY_MARGIN_S > time.time():
                return cached[0]
            response = self.session.post(
                self.url("/api/token/refresh/"), json={"refresh": self.token}, timeout=self.timeout,
                allow_redirects=False,  # a redirect would carry the token (307/308 keep the body) off this origin
            )  # fmt: skip
            if response.status_code != 200:
                raise PermissionError(
                    f"Label Studio refused the Personal Access Token at /api/token/refresh/ "
                    f"(HTTP {response.status_code}); create a new token in Account & Settings"
                )
            access = response.json()["access"]
            _ACCESS_CACHE[key] = (access, _jwt_expiry(access))
            return access

    def check_credentials(self) -> bool | None:
        """Whether Label Studio accepts the token (``GET /api/current-user/whoami``); ``None`` when it cannot tell.

        Label Studio 1.23 creates organizations with legacy tokens off, yet ``/setup`` still sends the owner's legacy
        token: this finds out at ``/setup`` time, before every upload fetch fails.
        """
        try:
            with outbound.deadline(self.timeout) as clock:
                response = self.session.get(
                    self.url("/api/current-user/whoami"), headers=self.headers(), timeout=clock.remaining(),
                    allow_redirects=False,
                )  # fmt: skip
                response.close()
        except PermissionError:  # the Personal Access Token itself was refused
            return False
        except (requests.RequestException, ValueError):
            return None
        if response.status_code in (401, 403):
            return False
        return True if response.status_code == 200 else None

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """``GET`` a Label Studio API path with the client's credentials and answer its JSON.

        Raises:
            LabelStudioAPIError: Not reachable, not 200, or not JSON.
        """
        return self.request_json("GET", path, params=params)

    def request_json(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        """Call a Label Studio API path with the client's credentials; its JSON answer (``None`` when empty).

        The request's destination is this client's origin by construction (``url``); a PAT's access token is
        refreshed once on a 401.

        Raises:
            LabelStudioAPIError: Not reachable, not 2xx, or not JSON; the message names the call and the status.
        """
        try:
            with outbound.deadline(self.timeout) as clock:

                def send(refresh: bool) -> requests.Response:
                    return self.session.request(
                        method, self.url(path), params=params, json=body, headers=self.headers(refresh=refresh),
                        timeout=clock.remaining(), allow_redirects=False,
                    )  # fmt: skip

                response = send(False)
                if response.status_code == 401 and self.token:
                    response = send(True)
                ok = 200 <= response.status_code < 300
                answer = response.json() if ok and response.content else None
        except (PermissionError, requests.RequestException, ValueError) as exc:
            raise LabelStudioAPIError(
                f"{method} {path} on {self.base_url} failed: {type(exc).__name__}: {exc}"
            ) from None
        if response.is_redirect:
            raise LabelStudioAPIError(
                f"{method} {path} on {self.base_url} answered a redirect (HTTP {response.status_code}), which is not "
                "followed with credentials: set LABEL_STUDIO_URL to the URL Label Studio really serves"
            )
        if not ok:
            detail = " ".join(response.text.split())[:200]
            raise LabelStudioAPIError(
                f"{method} {path} on {self.base_url} answered HTTP {response.status_code}: {detail}"
            )
        return answer
