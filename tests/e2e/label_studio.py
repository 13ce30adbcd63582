"""Start a real Label Studio for end-to-end tests and talk to its REST API.

The Label Studio executable comes from the ``LABEL_STUDIO_BIN`` environment variable (Label Studio lives in its own
virtual environment, its pins differ from ours). Every instance gets a fresh data directory, a free loopback port,
a fixed admin user and a generated legacy API token; only the process group this module started is ever stopped.

Example:
    >>> with LabelStudio(document_root=tmp_path / "files") as ls:  # doctest: +SKIP
    ...     project = ls.create_project("demo", label_config)
    ...     ls.import_files(project["id"], [image_path])
"""

from __future__ import annotations

import atexit
import contextlib
import mimetypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

LABEL_STUDIO_BIN_ENV = "LABEL_STUDIO_BIN"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "prelabel-e2e-password"  # throwaway account of a throwaway loopback server
HOST = "127.0.0.1"
# Variables Label Studio reads as its own settings: inherited values would change the admin user, port or host.
_UNSET_ENV = ("USERNAME", "PASSWORD", "PORT", "HOST", "USER_TOKEN", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


class LabelStudioError(RuntimeError):
    """Label Studio failed to start, or an API call returned an unexpected status."""


def label_studio_bin() -> Path:
    """Return the Label Studio executable named by ``LABEL_STUDIO_BIN``.

    Returns:
        The path of an existing executable file.

    Raises:
        LabelStudioError: The variable is unset, or names no executable file.
    """
    value = os.environ.get(LABEL_STUDIO_BIN_ENV, "").strip()
    if not value:
        raise LabelStudioError(
            f"{LABEL_STUDIO_BIN_ENV} is not set: point it at the `label-studio` executable of a Label Studio "
            f"1.23.x virtual environment, e.g. {LABEL_STUDIO_BIN_ENV}=/path/to/lsvenv/bin/label-studio"
        )
    path = Path(value).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise LabelStudioError(f"{LABEL_STUDIO_BIN_ENV}={value!r} is not an executable file")
    return path


def free_port(host: str = HOST) -> int:
    """Return a TCP port that is free on ``host`` right now.

    Args:
        host: Interface to bind to.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _raise_for(response: requests.Response, expected: Iterable[int]) -> requests.Response:
    """Return ``response`` if its status is expected, else raise with the body.

    Args:
        response: A Label Studio API response.
        expected: Accepted status codes.

    Returns:
        The same response.

    Raises:
        LabelStudioError: The status is not in ``expected``.
    """
    if response.status_code not in set(expected):
        raise LabelStudioError(
            f"{response.request.method} {response.url} -> {response.status_code}: {response.text[:2000]}"
        )
    return response


def _wait_exit(pid: int, timeout: float) -> int | None:
    """Wait up to ``timeout`` s for child ``pid`` to exit, without reaping it.

    Args:
        pid: A child process of this process.
        timeout: Seconds to wait; 0 checks once.

    Returns:
        Its exit status (negative signal number if killed), or None while it runs.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # already reaped
            return 0
        if info is not None and info.si_pid == pid:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


class LabelStudio:
    """A Label Studio server run as a subprocess on 127.0.0.1, with API helpers.

    Attributes:
        document_root: ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` of the server.
        token: Legacy API token of the admin user (40 hex characters).
        port: Port the server listens on.
        base_url: ``http://127.0.0.1:<port>``.
        work_dir: Temporary directory holding the data directory (and the log by default).
        data_dir: ``LABEL_STUDIO_BASE_DATA_DIR`` of the server.
        log_path: File receiving Label Studio's stdout and stderr.
    """

    def __init__(
        self,
        document_root: str | os.PathLike[str],
        *,
        executable: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 180.0,
        stop_timeout: float = 15.0,
        extra_env: Mapping[str, str] | None = None,
        cleanup: bool = True,
    ) -> None:
        """Prepare (but do not start) a server.

        Args:
            document_root: Directory local-files tasks are served from; created if missing.
            executable: ``label-studio`` executable; defaults to ``$LABEL_STUDIO_BIN``.
            log_path: Where to write LS's log; defaults to ``<work_dir>/label-studio.log`` (removed with the
                work dir when ``cleanup`` is true: pass a path to keep it).
            startup_timeout: Seconds to wait for ``GET /health``.
            stop_timeout: Seconds to wait after SIGTERM before SIGKILL.
            extra_env: Extra environment variables for the server (override the defaults).
            cleanup: Remove the work dir (data dir, default log) on :meth:`stop`.
        """
        self.executable = Path(executable) if executable is not None else label_studio_bin()
        if not self.executable.is_file() or not os.access(self.executable, os.X_OK):
            raise LabelStudioError(f"{self.executable} is not an executable file")
        self.document_root = Path(document_root).resolve()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_env = dict(extra_env or {})
        self.cleanup = cleanup
        self.token = secrets.token_hex(20)
        self.username = ADMIN_EMAIL
        self.password = ADMIN_PASSWORD
        self.port = 0
        self.base_url = ""
        self.work_dir: Path | None = None
        self.data_dir: Path | None = None
        self.log_path: Path | None = Path(log_path).resolve() if log_path is not None else None
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Token {self.token}"
        self._pat: str | None = None

    # ----------------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> LabelStudio:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """Pid of the server process (also its process group id), or None when not started."""
        return self._process.pid if self._process is not None else None

    def environment(self) -> dict[str, str]:
        """Return the environment the server runs with.

        Returns:
            A copy of ``os.environ`` without the variables LS would misread, plus the test settings.

        Raises:
            LabelStudioError: Called before :meth:`start` chose the data dir.
        """
        if self.data_dir is None:
            raise LabelStudioError("environment() needs the data dir: call start()")
        env = {key: value for key, value in os.environ.items() if key not in _UNSET_ENV}
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "ML_BLOCK_LOCAL_IP": "false",
                "SSRF_PROTECTION_ENABLED": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "COLLECT_ANALYTICS": "false",
                "LATEST_VERSION_CHECK": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        """Return the command line that starts the server."""
        return [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host",
            HOST,
            "--port",
            str(self.port),
            "--username",
            self.username,
            "--password",
            self.password,
            "--user-token",
            self.token,
            "--enable-legacy-api-token",
        ]

    def start(self) -> None:
        """Start the server and wait until it answers ``GET /health`` and accepts the token.

        Raises:
            LabelStudioError: Already started, the process died, it did not become healthy within
                ``startup_timeout`` seconds, or the token was refused. The message ends with LS's log tail.
        """
        if self._process is not None:
            raise LabelStudioError(f"Label Studio already started (pid {self._process.pid})")
        self.document_root.mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix="prelabel-ls-"))
        self.data_dir = self.work_dir / "data"
        self.data_dir.mkdir()
        if self.log_path is None:
            self.log_path = self.work_dir / "label-studio.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self._log_file = self.log_path.open("ab")
        started = time.monotonic()
        self._process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            cwd=self.work_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() kills exactly what we started
        )
        atexit.register(self.stop)
        try:
            self._wait_healthy(started)
            whoami = self.api("GET", "/api/current-user/whoami")
            if whoami.status_code != 200:
                raise LabelStudioError(f"legacy token refused: {whoami.status_code} {whoami.text[:500]}")
        except BaseException as exc:
            tail = self.log_tail()
            self.stop(keep_work_dir=True)
            if isinstance(exc, LabelStudioError):
                raise LabelStudioError(f"{exc}\n--- {self.log_path} (tail) ---\n{tail}") from None
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_healthy(self, started: float) -> None:
        """Poll ``GET /health`` until it answers 200 or the time is up."""
        assert self._process is not None
        deadline = started + self.startup_timeout
        while True:
            code = _wait_exit(self._process.pid, 0)
            if code is not None:
                raise LabelStudioError(f"Label Studio exited with code {code} before becoming healthy")
            if "is in use." in self.log_tail(4000):
                # LS silently moves to the next port when ours is taken: never talk to a stranger.
                raise LabelStudioError(f"port {self.port} was taken before Label Studio bound it")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise LabelStudioError(
                    f"Label Studio not healthy at {self.base_url}/health after {self.startup_timeout:.0f} s"
                )
            time.sleep(0.5)

    def stop(self, *, keep_work_dir: bool = False) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL) and remove the work dir.

        Safe to call more than once.

        Args:
            keep_work_dir: Keep the data dir and log even when ``cleanup`` is true.
        """
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None:
            self._terminate_group(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._session.close()
        if self.cleanup and not keep_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    def _terminate_group(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group we started, SIGKILL it after ``stop_timeout``, then reap the leader.

        The leader is reaped last: until then its pid, which is the group id, cannot be reused, so the group
        signals can only reach processes this harness started.
        """
        pgid = process.pid  # start_new_session=True: the group id is the leader's pid
        if process.returncode is None:  # not reaped yet
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
                if _wait_exit(pgid, self.stop_timeout) is not None:
                    break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)  # leftover children (none expected with runserver --noreload)
        process.wait(timeout=self.stop_timeout)

    def log_tail(self, chars: int = 6000) -> str:
        """Return the last ``chars`` characters of LS's log."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - chars))
            return fh.read().decode("utf-8", errors="replace")

    # --------------------------------------------------------------------------------------------------- API

    def url(self, path: str) -> str:
        """Return the absolute URL of ``path`` (absolute URLs pass through)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Send a request authenticated with the admin's legacy token.

        Args:
            method: HTTP method.
            path: Path such as ``/api/projects`` (or an absolute URL).
            **kw: Passed to :meth:`requests.Session.request`; ``timeout`` defaults to 120 s. Pass
                ``headers={"Authorization": ...}`` to use other credentials.

        Returns:
            The response, whatever its status.
        """
        kw.setdefault("timeout", 120)
        return self._session.request(method, self.url(path), **kw)

    def _json(self, method: str, path: str, expected: Iterable[int] = (200, 201), **kw: Any) -> Any:
        return _raise_for(self.api(method, path, **kw), expected).json()

    def create_project(self, title: str, label_config: str, **fields: Any) -> dict[str, Any]:
        """Create a project.

        Args:
            title: Project title.
            label_config: Labeling config XML.
            **fields: Further project fields.

        Returns:
            The project as LS returns it (``id``, ``created_at``, ...).
        """
        return self._json("POST", "/api/projects", json={"title": title, "label_config": label_config, **fields})

    def import_files(self, project_id: int, paths: Iterable[str | os.PathLike[str]]) -> list[int]:
        """Upload files (one task each) through the multipart import.

        Args:
            project_id: Target project.
            paths: Files to upload; task data points at ``/data/upload/<project>/<uuid>-<name>``.

        Returns:
            The created task ids, in upload order.
        """
        with contextlib.ExitStack() as stack:
            files = {}
            for i, path in enumerate(map(Path, paths)):
                mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                files[f"file{i}"] = (path.name, stack.enter_context(path.open("rb")), mime)
            if not files:
                return []
            body = self._json(
                "POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, files=files
            )
        return [int(task_id) for task_id in body.get("task_ids", [])]

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import tasks as JSON, e.g. ``{"data": {"image": "/data/local-files/?d=dir/a.png"}}``.

        Local files are only served if a local-files storage of the project covers their directory: see
        :meth:`add_local_storage`.

        Args:
            project_id: Target project.
            tasks: Task dicts (``data`` plus optional ``annotations``/``predictions``).

        Returns:
            The created task ids, in order.
        """
        body = self._json("POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=tasks)
        return [int(task_id) for task_id in body.get("task_ids", [])]

    def add_local_storage(
        self, project_id: int, path: str | os.PathLike[str], *, title: str = "local files"
    ) -> dict[str, Any]:
        """Connect a local-files import storage so LS serves ``/data/local-files/?d=`` under ``path``.

        LS 1.23 answers 404 for a local file unless a project storage's path contains the file's directory, and
        the storage path must be a strict subdirectory of the document root. Nothing is synced: tasks come from
        :meth:`import_tasks`.

        Args:
            project_id: Target project.
            path: Directory inside (not equal to) :attr:`document_root`; relative paths are taken from it.
            title: Storage title.

        Returns:
            The storage as LS returns it.
        """
        directory = Path(path)
        if not directory.is_absolute():
            directory = self.document_root / directory
        return self._json(
            "POST",
            "/api/storages/localfiles/",
            json={"project": project_id, "path": str(directory), "title": title, "use_blob_urls": False},
        )

    def local_file_url(self, path: str | os.PathLike[str]) -> str:
        """Return the task-data URL (``/data/local-files/?d=...``) of a file under the document root."""
        relative = Path(path)
        if relative.is_absolute():
            relative = relative.resolve().relative_to(self.document_root)
        return "/data/local-files/?d=" + requests.utils.quote(relative.as_posix(), safe="/")

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Return all tasks of a project with all fields (annotations, predictions, ...)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._json(
                "GET",
                "/api/tasks",
                params={"project": project_id, "page": page, "page_size": 100, "fields": "all"},
            )
            batch = body["tasks"] if isinstance(body, dict) else body
            out.extend(batch)
            total = body.get("total", len(out)) if isinstance(body, dict) else len(out)
            if not batch or len(out) >= total:
                return out
            page += 1

    def add_ml_backend(
        self,
        project_id: int,
        url: str,
        *,
        title: str,
        is_interactive: bool = True,
        extra_params: dict[str, Any] | str | None = None,
        auth_method: str | None = None,
        basic_auth_user: str | None = None,
        basic_auth_pass: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Connect an ML backend to a project (``POST /api/ml``).

        LS calls the backend's ``/health`` and ``/setup`` (with ``extra_params``) before it answers, so the
        backend must be up. ``extra_params`` is stored as given: a dict reaches ``/setup`` as a JSON object, a
        string (what the LS UI's textarea sends) as a JSON string.

        Args:
            project_id: Target project.
            url: Backend base URL.
            title: Backend title.
            is_interactive: Enable interactive preannotations (smart tools).
            extra_params: Value of the "Extra params" box.
            auth_method: ``"NONE"`` or ``"BASIC_AUTH"``; ``"BASIC_AUTH"`` is implied by ``basic_auth_user``.
            basic_auth_user: Basic auth user.
            basic_auth_pass: Basic auth password.
            timeout: Prediction timeout in seconds (LS default 100).

        Returns:
            The ML backend as LS returns it (``id``, ``state``, ``model_version``, ``extra_params``, ...).
        """
        payload: dict[str, Any] = {"project": project_id, "url": url, "title": title, "is_interactive": is_interactive}
        if extra_params is not None:
            payload["extra_params"] = extra_params
        if basic_auth_user is not None:
            auth_method = auth_method or "BASIC_AUTH"
            payload.update(basic_auth_user=basic_auth_user, basic_auth_pass=basic_auth_pass or "")
        if auth_method is not None:
            payload["auth_method"] = auth_method
        if timeout is not None:
            payload["timeout"] = timeout
        backend: dict[str, Any] = self._json("POST", "/api/ml", json=payload)
        if extra_params is not None and backend.get("extra_params") != extra_params:
            # LS 1.23.2 stores extra_params on create; this guards versions that drop it.
            backend = self.update_ml_backend(backend["id"], extra_params=extra_params)
        return backend

    def update_ml_backend(self, ml_id: int, **fields: Any) -> dict[str, Any]:
        """Change an ML backend (``PATCH /api/ml/{id}``), e.g. ``extra_params``.

        LS 1.23.2 validates a PATCH by calling the backend's ``/health`` and ``/setup`` with only the fields sent:
        without ``url`` it answers 500, without the auth fields it calls a basic-auth backend unauthenticated. So
        the current url, project and auth settings are sent along (an empty ``basic_auth_pass`` keeps the stored
        password).

        Args:
            ml_id: ML backend id.
            **fields: Fields to change.

        Returns:
            The updated ML backend.
        """
        current = self._json("GET", f"/api/ml/{ml_id}")
        base: dict[str, Any] = {"url": current["url"], "project": current["project"]}
        if current.get("auth_method") == "BASIC_AUTH":
            base.update(auth_method="BASIC_AUTH", basic_auth_user=current.get("basic_auth_user"), basic_auth_pass="")
        return self._json("PATCH", f"/api/ml/{ml_id}", json={**base, **fields})

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        """List a project's ML backends (LS runs ``/health`` + ``/setup`` on each to refresh its state)."""
        return self._json("GET", "/api/ml", params={"project": project_id})

    def retrieve_predictions(self, project_id: int) -> dict[str, Any]:
        """Run the Data Manager action "Retrieve predictions" on all tasks of a project.

        Returns:
            LS's answer, e.g. ``{"processed_items": 3, "detail": "Retrieved 3 predictions"}`` (said even when
            nothing was stored).
        """
        return self._json(
            "POST",
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": project_id},
            json={"selectedItems": {"all": True, "excluded": []}, "project": str(project_id)},
        )

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        """Return the stored predictions of a task."""
        return self._json("GET", "/api/predictions", params={"task": task_id})

    def interactive_annotating(self, ml_id: int, task_id: int, context: dict[str, Any] | None) -> dict[str, Any]:
        """Ask the backend for an interactive prediction, like a smart tool does.

        Args:
            ml_id: ML backend id.
            task_id: Task id.
            context: ``{"result": [<regions the user drew>]}``.

        Returns:
            ``{"data": <results[0] of the backend's answer>}``; nothing is stored.
        """
        return self._json("POST", f"/api/ml/{ml_id}/interactive-annotating", json={"task": task_id, "context": context})

    def train(self, ml_id: int) -> requests.Response:
        """Press "Start training" (LS posts ``START_TRAINING`` to the backend's ``/webhook``)."""
        return self.api("POST", f"/api/ml/{ml_id}/train", json={})

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """Create an annotation as the admin (LS emits ``ANNOTATION_CREATED`` webhooks)."""
        return self._json("POST", f"/api/tasks/{task_id}/annotations", json={"result": result, **fields})

    def create_user(self, email: str, password: str) -> str:
        """Sign a second user up into the admin's organization, as its invite link does; their legacy token.

        Label Studio Community has no user API: ``GET /api/invite`` gives the organization's invite token, and the
        sign-up form (``/user/signup/?token=...``, CSRF-protected) creates the user, adds them to the organization and
        logs them in; that session reads their token at ``/api/current-user/token``.
        """
        invite = self._json("GET", "/api/invite")["token"]
        browser = requests.Session()
        signup = self.url(f"/user/signup/?token={invite}")
        _raise_for(browser.get(signup, timeout=60), (200,))
        form = {"csrfmiddlewaretoken": browser.cookies["csrftoken"], "email": email, "password": password}
        _raise_for(browser.post(signup, data=form, headers={"Referer": signup}, timeout=60), (200, 302))
        answer = _raise_for(browser.get(self.url("/api/current-user/token"), timeout=60), (200,))
        return str(answer.json()["token"])

    # ------------------------------------------------------------------------------------ personal access tokens

    def create_personal_access_token(self) -> str:
        """Return a Personal Access Token (a JWT refresh token) of the admin user.

        Creates it with ``POST /api/token/`` after making sure the organization allows JWT tokens
        (``POST /api/jwt/settings``). LS allows one live PAT per user and shows it only once, so it is cached.

        Returns:
            The PAT.
        """
        if self._pat is None:
            settings = self._json("GET", "/api/jwt/settings")
            if not settings.get("api_tokens_enabled"):
                self._json(
                    "POST",
                    "/api/jwt/settings",
                    json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True},
                )
            self._pat = str(self._json("POST", "/api/token/", json={})["token"])
        return self._pat

    @contextlib.contextmanager
    def legacy_tokens_disabled(self) -> Iterator[str]:
        """Turn legacy tokens off for the organization, as Label Studio 1.23 creates organizations by default.

        Meanwhile this harness authenticates with a Personal Access Token (yielded); legacy tokens are turned back
        on afterwards.
        """
        pat = self.create_personal_access_token()
        self._json("POST", "/api/jwt/settings", json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": False})
        legacy = self._session.headers["Authorization"]
        self._session.auth = _BearerAuth(self, pat)
        del self._session.headers["Authorization"]
        try:
            yield pat
        finally:
            self._json(
                "POST", "/api/jwt/settings", json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True}
            )
            self._session.auth = None
            self._session.headers["Authorization"] = legacy

    def access_token(self, pat: str | None = None) -> str:
        """Exchange a PAT for a short-lived (5 min) access token: ``POST /api/token/refresh/``.

        Args:
            pat: The PAT; defaults to :meth:`create_personal_access_token`.

        Returns:
            The access token, to send as ``Authorization: Bearer <access>``.
        """
        pat = pat or self.create_personal_access_token()
        response = requests.post(self.url("/api/token/refresh/"), json={"refresh": pat}, timeout=30)
        return str(_raise_for(response, (200,)).json()["access"])


class _BearerAuth(requests.auth.AuthBase):
    """Sends a fresh access token for a Personal Access Token with every request (they live 5 minutes)."""

    def __init__(self, ls: LabelStudio, pat: str) -> None:
        self.ls, self.pat = ls, pat

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.ls.access_token(self.pat)}"
        return request
