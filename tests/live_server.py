"""A real `agentlb` server process on a free loopback port, for the tests of every folder that
need one (API end to end, crash durability, load, access logs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
HEALTH = "/load-balancing/health"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(home: Path, **overrides: str) -> dict[str, str]:
    """The test's environment without any AGENTLB_ setting of the caller's, pointed at `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLB_")}
    env.update(
        {"AGENTLB_HOME": str(home), "AGENTLB_MODEL_POLL_INTERVAL_S": "0", "AGENTLB_MODEL_COMPILE": "false"}
    )
    env.update(overrides)
    return env


class ServerProcess:
    """`command --host 127.0.0.1 --port <free>` as a subprocess, output to a log file in `home`;
    the constructor returns once /health answers."""

    def __init__(self, command: list[str], home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}: {self.output()[-4000:]}")
            try:
                httpx.get(f"{self.base}{HEALTH}", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server did not answer within {START_TIMEOUT_S:.0f} s: {self.output()[-4000:]}")

    def output(self) -> str:
        """Everything the server printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()
