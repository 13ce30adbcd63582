"""Runs ``prelabel serve`` (gunicorn) as a subprocess on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.e2e.label_studio import free_port


class PrelabelServer:
    """``prelabel serve`` with the given environment; stops its own process group only.

    Args:
        work_dir: Holds ``MODEL_DIR`` and the server log.
        env: Extra environment (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``, ...).
        workers: gunicorn worker processes.
    """

    def __init__(self, work_dir: Path, env: dict[str, str] | None = None, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work_dir = work_dir
        self.log_path = work_dir / "prelabel.log"
        self.env = {**os.environ, "MODEL_DIR": str(work_dir / "model_dir"), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.command = [sys.executable, "-m", "backend.cli", "serve", "--host", "127.0.0.1", "--port",
                        str(self.port), "--workers", str(workers), "--threads", "4"]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrelabelServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prelabel exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"prelabel did not become healthy:\n{self.log_tail()}")

    def __exit__(self, *exc: object) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(5)

    def kill(self) -> None:
        """``kill -9`` the server, workers included (its own process group)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)

    def send_raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send bytes as they are on a new connection, and nothing more; all the server answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as connection:
            connection.sendall(data)
            connection.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        return answer

    def log_text(self) -> str:
        """The whole server log."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""
