"""A small egress proxy as a real process, for the transport's proxy tests: CONNECT tunnels and forwarding.

    python -m tests.proxy_server --port 3128 [--mode open|refuse|hang|garbage] [--status 403]
                                 [--credentials user:password]

- `open`: CONNECT `host:port` opens a TCP tunnel (bytes relayed both ways, so TLS runs end to end);
  an absolute-form request (`POST http://host:port/path HTTP/1.1`) is forwarded to that origin, and
  the rest of the connection relayed. With `--credentials`, a missing or wrong `Proxy-Authorization:
  Basic` gets 407 Proxy Authentication Required.
- `refuse`: every CONNECT and forwarded request gets `--status` (403 unless told).
- `hang`: reads the request and never answers.
- `garbage`: answers with bytes that are not HTTP (as a wrong port, e.g. an SSH server, would).

Requests in origin form to the proxy itself are its control surface: `GET /__proxy/stats` answers
`{"tunnels": n, "forwarded": n, "refused": n, "hung": n, "targets": [...], "auth_failures": n}`.
It counts what a test asserts: how many tunnels were opened, and to where. `ProxyProcess` runs one on
a free port for the length of a `with` block.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.emulators.server import free_port

ROOT = Path(__file__).resolve().parents[1]
MAX_HEAD = 64 * 1024


class Proxy:
    def __init__(self, mode: str, status: int, credentials: str | None) -> None:
        self.mode = mode
        self.status = status
        self.expected = b"Basic " + base64.b64encode(credentials.encode()) if credentials else None
        self.stats: dict[str, Any] = {
            "tunnels": 0,
            "forwarded": 0,
            "refused": 0,
            "hung": 0,
            "auth_failures": 0,
            "targets": [],
        }
        self._hanging: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = ([*lines[0].split(" "), "", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if target.startswith("/"):
            await self._control(target, writer)
            return
        self.stats["targets"].append(f"{method} {target}")
        if self.mode == "hang":
            self.stats["hung"] += 1
            self._hanging.append(writer)  # held open, never answered, until the process ends
            return
        if self.mode == "garbage":
            self.stats["refused"] += 1
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n\r\n")
            writer.close()
            return
        if self.mode == "refuse":
            self.stats["refused"] += 1
            await self._answer(writer, self.status, b"refused by policy")
            return
        if self.expected is not None and headers.get("proxy-authorization", "").encode() != self.expected:
            self.stats["auth_failures"] += 1
            await self._answer(
                writer, 407, b"credentials required", b'Proxy-Authenticate: Basic realm="test"\r\n'
            )
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await self._open(host.strip("[]"), int(port), writer)
            if upstream is None:
                return
            self.stats["tunnels"] += 1
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._relay(reader, writer, *upstream)
            return
        parts = urlsplit(target)
        upstream = await self._open(parts.hostname or "", parts.port or 80, writer)
        if upstream is None:
            return
        self.stats["forwarded"] += 1
        kept = [line for line in lines if not line.lower().startswith("proxy-authorization:")]
        upstream[1].write("\r\n".join(kept).encode("latin-1"))
        await self._relay(reader, writer, *upstream)

    async def _open(
        self, host: str, port: int, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.open_connection(host, port)
        except OSError:
            await self._answer(writer, 502, b"upstream unreachable")
            return None

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _answer(
        self, writer: asyncio.StreamWriter, status: int, body: bytes, extra: bytes = b""
    ) -> None:
        writer.write(
            b"HTTP/1.1 %d Proxy says no\r\ncontent-length: %d\r\nconnection: close\r\n" % (status, len(body))
            + extra
            + b"\r\n"
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _control(self, target: str, writer: asyncio.StreamWriter) -> None:
        if target == "/__proxy/stats":
            body = json.dumps(self.stats).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (len(body), body)
            )
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def serve(port: int, proxy: Proxy) -> None:
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, limit=MAX_HEAD)
    async with server:
        await server.serve_forever()


class ProxyProcess:
    """`python -m tests.proxy_server` on a free port; `url` for configs, `stats()` for assertions."""

    def __init__(self, *, mode: str = "open", status: int = 403, credentials: str | None = None) -> None:
        self.port = free_port()
        userinfo = f"{credentials}@" if credentials else ""
        self.url = f"http://{userinfo}127.0.0.1:{self.port}"
        self.where = f"127.0.0.1:{self.port}"
        self._args = ["--port", str(self.port), "--mode", mode, "--status", str(status)]
        if credentials:
            self._args += ["--credentials", credentials]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> ProxyProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.proxy_server", *self._args], cwd=ROOT, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the proxy exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"the proxy on port {self.port} did not start within {timeout} s")

    def stats(self) -> dict[str, Any]:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/__proxy/stats", timeout=5, trust_env=False)
        stats: dict[str, Any] = answer.json()
        return stats

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["open", "refuse", "hang", "garbage"], default="open")
    parser.add_argument("--status", type=int, default=403)
    parser.add_argument("--credentials")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, Proxy(args.mode, args.status, args.credentials)))


if __name__ == "__main__":
    main()
