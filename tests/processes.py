"""Start `retryopt serve` as a real process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def retryopt_executable() -> str:
    """The installed `retryopt` command next to this interpreter (the one a user runs)."""
    return shutil.which("retryopt", path=str(Path(sys.executable).parent)) or "retryopt"


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    args: list[str], cwd: Path, env: dict[str, str], ready_seconds: float = 60, log_path: Path | None = None
) -> Iterator[str]:
    """`retryopt serve ARGS` until the block ends; yields its base URL once /readyz answers 200.

    The server's output goes to `log_path` (default: a file in `cwd`), not to a pipe: a pipe nobody
    reads fills up under a busy access log and blocks the server.
    """
    port = free_port()
    log_file = log_path or cwd / f"retryopt-serve-{port}.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [retryopt_executable(), "serve", *args, "--port", str(port)],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_seconds
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not become ready: {log_file.read_text()[-2000:]}")
                time.sleep(0.3)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
