"""`gateway serve` as a real subprocess, with its stdout (JSON log lines) and stderr kept for assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests import secret_scan
from tests.emulators.server import free_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


class GatewayProcess:
    def __init__(
        self,
        config: dict[str, Any],
        directory: Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / f"gateway-{self.port}.yaml"
        self.rewrite(config)
        self.stdout_path = directory / f"gateway-{self.port}.out"
        self.stderr_path = directory / f"gateway-{self.port}.err"
        self._workers = workers
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | (env or {})
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            command = [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)]
            self._process = subprocess.Popen(
                [*command, "--workers", str(self._workers)],
                stdout=stdout,
                stderr=stderr,
                cwd=ROOT,
                env=self._env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise RuntimeError(f"gateway exited with {code}: {self.stderr_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=0.5).status_code in (200, 503):
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"gateway on {self.url} did not start within {timeout} s")

    def rewrite(self, config: dict[str, Any]) -> None:
        """Write the config file (what the process reads at start-up and on a reload)."""
        config = {**config, "log_format": "json", "listen": {"host": "127.0.0.1", "port": self.port}}
        secret_scan.register_config(config)
        self.config_path.write_text(json.dumps(config))  # JSON is YAML

    def send_signal(self, signum: int) -> None:
        assert self._process is not None
        self._process.send_signal(signum)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None:
            secret_scan.scan(self.output(), f"gateway serve on port {self.port}")

    def terminate(self) -> None:
        """SIGTERM, without waiting: for tests of the graceful shutdown."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit status once the process has ended (raises `subprocess.TimeoutExpired` if it hangs)."""
        assert self._process is not None
        return self._process.wait(timeout)

    def log_lines(self, *, settle_s: float = 0.5) -> list[dict[str, Any]]:
        """Every JSON line written so far (after the app's periodic flush has had time to run)."""
        time.sleep(settle_s)
        lines = []
        for raw in self.stdout_path.read_bytes().split(b"\n")[:-1]:  # a line still being written waits
            if raw.strip():
                lines.append(json.loads(raw))
        return lines

    def requests_logged(self, **match: Any) -> list[dict[str, Any]]:
        """The request lines with these values, once there is at least one (log lines are flushed
        periodically, later on a busy machine): waits up to `wait_for`'s hang guard."""

        def matching() -> list[dict[str, Any]]:
            return [
                line
                for line in self.log_lines(settle_s=0)
                if line.get("event") == "request" and all(line.get(k) == v for k, v in match.items())
            ]

        return wait_for(matching)

    def output(self) -> str:
        """Everything the process wrote, stdout and stderr: for scans."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


__all__ = ("GatewayProcess",)
