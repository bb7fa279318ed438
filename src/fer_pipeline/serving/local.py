"""Run the API on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def local_server(
    project: Path, env: dict[str, str] | None = None, log: Path | None = None, timeout: float = 120
) -> Iterator[str]:
    """``uvicorn --factory fer_pipeline.serving.app:create_app`` serving ``project``'s
    latest export on 127.0.0.1; yields its URL once ``/health`` answers (asked with
    ``FER_API_KEY`` when it is set), and stops it on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "fer_pipeline.serving.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    environ = {**os.environ, "FER_PROJECT_PATH": str(Path(project).resolve()), **(env or {})}
    with open(log or os.devnull, "w") as output:
        process = subprocess.Popen(
            command, cwd=project, env=environ, stdout=output, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        key = environ.get("FER_API_KEY")
        health = urllib.request.Request(f"{url}/health", headers={"X-API-Key": key} if key else {})
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    urllib.request.urlopen(health, timeout=2)
                    break
                except OSError:
                    if process.poll() is not None or time.time() > deadline:
                        detail = Path(log).read_text()[-3000:] if log else ""
                        raise RuntimeError(f"the API did not start\n{detail}") from None
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
