"""Real `redis-server` processes for tests: one server, or a three-node Redis Cluster, on free ports.

No persistence (`--save ''`, `--appendonly no`), loopback only, files in a temporary directory.
`RedisServer.stop()` and `.start()` again (same port) let tests simulate an outage and a recovery.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.emulators.server import free_port

START_TIMEOUT_S = 10.0


def redis_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one inline command and return the first reply line (enough for PING, CLUSTER INFO...)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(" ".join(args).encode() + b"\r\n")
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        if reply.startswith(b"$"):  # a bulk string: read its body too
            size = int(reply[1 : reply.index(b"\r\n")])
            header = reply.index(b"\r\n") + 2
            while len(reply) < header + size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            return reply[header : header + size]
        return reply.rstrip(b"\r\n")


class RedisServer:
    """One `redis-server` on 127.0.0.1; `cluster=True` starts it as an (unassigned) cluster node."""

    def __init__(
        self,
        *,
        port: int | None = None,
        cluster: bool = False,
        directory: Path | None = None,
        password: str | None = None,
    ):
        self.port = port or free_port()
        self.password = password
        self.cluster = cluster
        self.bus_port = free_port() if cluster else 0
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="redis-test-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / f"redis-{self.port}.log"),
        ]  # fmt: skip
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-port", str(self.bus_port),
                "--cluster-config-file", f"nodes-{self.port}.conf",
                "--cluster-node-timeout", "500",
            ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self._process.returncode}")
            try:
                # With a password, an unauthenticated PING is refused: that answer says it is up too.
                if command(self.port, "PING") in (b"+PONG", b"-NOAUTH Authentication required."):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisClusterServers:
    """Three master nodes (no replicas) joined with `redis-cli --cluster create`."""

    def __init__(self, nodes: int = 3) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="redis-cluster-test-"))
        self.nodes = [RedisServer(cluster=True, directory=self.directory) for _ in range(nodes)]

    @property
    def url(self) -> str:
        """The gateway's `redis_url` for this cluster (every node listed as a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            nodes = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=30,
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            while not all(b"cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise TimeoutError("the test Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ("RedisClusterServers", "RedisServer", "command", "redis_available")
