"""A redis-server of a test's own: restartable, stoppable (SIGSTOP), killable (kill -9).

The session's server (conftest's `redis_url`) is shared by every test; the fault tests
need one they may pause, kill and restart, with its append-only file in its own directory.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A port of 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """One redis-server of our own, append-only (by default) in its own directory."""

    def __init__(
        self, directory: Path, *, appendonly: bool = True, extra: tuple[str, ...] = ()
    ) -> None:
        """`extra`: more redis-server arguments (e.g. `--appendfsync always`)."""
        if not Path(REDIS_SERVER).exists():
            pytest.fail(
                "redis-server is not installed: these tests need a real server", pytrace=False
            )
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def _pings(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        # Same port and directory every time: a restart finds the AOF it wrote.
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--save",
                "",
                "--logfile",
                "redis.log",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._pings():
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                pytest.fail(f"redis-server exited with {code} on start:\n{self.log}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"redis-server did not answer PING within {timeout} s:\n{self.log}")
            time.sleep(0.01)  # polling interval of the PING wait, not a synchronisation

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM: redis-server fsyncs its AOF) and wait for the exit."""
        assert self.process is not None, "not running"
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout)
        finally:
            self.kill()

    def pause(self) -> None:
        """SIGSTOP: the server holds every connection open and answers nothing."""
        assert self.process is not None, "not running"
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: the server runs what queued up while it was stopped."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """kill -9 (after SIGCONT, so a paused server dies too) and reap it."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)
                self.process.kill()
            self.process.wait()
            self.process = None
