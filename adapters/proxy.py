"""Egress proxies for the upstream transport: which proxy an origin goes through, and the CONNECT step.

Where the proxy comes from, per backend (`proxy:` in its config):

- unset: the process environment, as curl and httpx read it: `https_proxy`/`HTTPS_PROXY` for https
  upstreams, `http_proxy`/`HTTP_PROXY` for http ones, `all_proxy`/`ALL_PROXY` for either when the
  scheme's own variable is unset (lower case wins over upper case), and `no_proxy`/`NO_PROXY` for
  the hosts that bypass them;
- a URL (`http://user:password@proxy.internal:3128`): that proxy for every request of the backend,
  whatever NO_PROXY says;
- `none`: direct connections, whatever the environment says.

How: an https upstream is reached through an HTTP CONNECT tunnel (`open_tunnel`), with TLS to the
upstream inside it, so the proxy sees only the host name; an http upstream's requests are sent to the
proxy in absolute form (`POST http://host:port/path`). Credentials in the proxy URL become a
`Proxy-Authorization: Basic` header. They are never part of a message: errors name a proxy by
`host:port` only (`Proxy.where`), so nothing here can leak them into a log line or a response.

Only `http://` proxy URLs are supported (the proxy connection itself is plain TCP, as with almost
every egress proxy); anything else is refused when the config is loaded.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote, urlsplit

import httpx

DIRECT: Final = "none"
"""The `proxy:` value that turns proxies off for one backend."""
MAX_CONNECT_HEAD: Final = 16 * 1024
"""A proxy's answer to CONNECT longer than this (status line and headers) is refused."""

_ENV_NAMES: Final = {
    "https": ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"),
    "http": ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"),
}
_NO_PROXY_NAMES: Final = ("no_proxy", "NO_PROXY")
ENVIRONMENT_VARIABLES: Final = frozenset(
    name for names in (*_ENV_NAMES.values(), _NO_PROXY_NAMES) for name in names
)
"""Every variable read here (deploy files may set these without the config naming them)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyURLError(ValueError):
    """A proxy URL that cannot be used. The message never repeats the URL (it may hold a password)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: bytes | None = field(repr=False)  # never in a repr (a traceback, a debug print)
    """The `Proxy-Authorization` header value, from the URL's user and password (None: no credentials)."""

    @property
    def where(self) -> str:
        """How messages name this proxy: host and port, never the credentials."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_proxy_url(url: str) -> Proxy:
    """`http://[user[:password]@]host[:port]`; a bare `host:port` is taken as http, as curl does."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ProxyURLError("not a valid proxy URL (expected http://[user:password@]host:port)") from None
    if parts.scheme.lower() != "http":
        raise ProxyURLError(f"proxy scheme '{parts.scheme}' is not supported (only http:// proxies)")
    if not parts.hostname:
        raise ProxyURLError("the proxy URL has no host (expected http://[user:password@]host:port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyURLError("a proxy URL is only scheme, credentials, host and port (no path or query)")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = b"Basic " + base64.b64encode(credentials)
    return Proxy(parts.hostname, port or 80, authorization)


def proxy_password(url: str | None) -> str | None:
    """The password (or, without one, the user) in a proxy URL: a secret to redact and scan for."""
    if not url or url.strip().lower() == DIRECT:
        return None
    text = url if "://" in url else "http://" + url
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    secret = parts.password or parts.username
    return unquote(secret) if secret else None


@dataclass(frozen=True, slots=True)
class _Bypass:
    """One NO_PROXY entry."""

    everything: bool = False
    name: str | None = None
    """A host name; it also covers its subdomains (`example.com` and `.example.com` alike)."""
    network: IPNetwork | None = None
    """An IP address (a /32 or /128) or a CIDR block, for hosts given as IP literals."""
    port: int | None = None

    def covers(self, host: str, address: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.everything:
            return True
        if self.network is not None:
            return address is not None and address in self.network
        assert self.name is not None
        return host == self.name or host.endswith("." + self.name)


def parse_no_proxy(value: str) -> tuple[_Bypass, ...]:
    """Comma- or space-separated: `*`, host names (subdomains included), IPs, CIDR blocks, `[v6]:port`."""
    rules: list[_Bypass] = []
    for raw in value.replace(",", " ").split():
        entry = raw.strip().lower()
        if entry == "*":
            rules.append(_Bypass(everything=True))
            continue
        port: int | None = None
        if entry.startswith("["):  # [v6] or [v6]:port
            host, _, rest = entry[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
            entry = host
        elif entry.count(":") == 1:  # host:port (more colons: a bare IPv6 literal)
            host, _, port_text = entry.partition(":")
            if port_text.isdigit():
                entry, port = host, int(port_text)
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            name = entry.removeprefix("*").lstrip(".")
            if name:
                rules.append(_Bypass(name=name, port=port))
        else:
            rules.append(_Bypass(network=network, port=port))
    return tuple(rules)


class ProxyPolicy:
    """Which proxy, if any, each origin goes through. Decided once per origin (the transport caches it)."""

    __slots__ = ("_by_scheme", "_bypass")

    def __init__(self, by_scheme: Mapping[str, Proxy], bypass: tuple[_Bypass, ...] = ()) -> None:
        self._by_scheme = dict(by_scheme)
        self._bypass = bypass

    @classmethod
    def fixed(cls, proxy: Proxy) -> ProxyPolicy:
        """One proxy for every origin (a backend's own `proxy:` URL): NO_PROXY does not apply."""
        return cls({"http": proxy, "https": proxy})

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ProxyPolicy | None:
        """The proxies the environment names (None: it names none). Raises `ProxyURLError`, naming the
        variable, for one that is set but unusable."""
        by_scheme: dict[str, Proxy] = {}
        for scheme, names in _ENV_NAMES.items():
            for name in names:
                value = environ.get(name, "").strip()
                if value:
                    try:
                        by_scheme[scheme] = parse_proxy_url(value)
                    except ProxyURLError as exc:
                        raise ProxyURLError(f"{name}: {exc}") from None
                    break
        if not by_scheme:
            return None
        no_proxy = next((environ[n] for n in _NO_PROXY_NAMES if environ.get(n, "").strip()), "")
        return cls(by_scheme, parse_no_proxy(no_proxy))

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self._by_scheme.get(scheme)
        if proxy is None or not self._bypass:
            return proxy
        host = host.lower().rstrip(".")
        try:
            address: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if any(rule.covers(host, address, port) for rule in self._bypass):
            return None
        return proxy


def resolve(setting: str | None, environ: Mapping[str, str]) -> ProxyPolicy | None:
    """A backend's proxies: its `proxy:` value (a URL or `none`), or else the environment's."""
    if setting is None:
        return ProxyPolicy.from_environment(environ)
    if setting.strip().lower() == DIRECT:
        return None
    return ProxyPolicy.fixed(parse_proxy_url(setting))


def check(setting: str | None) -> str | None:
    """What is wrong with a `proxy:` value, or None (for config validation)."""
    if setting is None or setting.strip().lower() == DIRECT:
        return None
    try:
        parse_proxy_url(setting)
    except ProxyURLError as exc:
        return str(exc)
    return None


# The CONNECT step


class _ConnectAnswer(asyncio.Protocol):
    """Reads a proxy's answer to CONNECT up to the end of its head; nothing after it is read here."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.head: asyncio.Future[tuple[bytes, bool]] = loop.create_future()
        """The head (status line and headers), and whether bytes followed it."""
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.head.done():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            self.head.set_result((bytes(self._buffer[:end]), len(self._buffer) > end + 4))
        elif len(self._buffer) > MAX_CONNECT_HEAD:
            self.head.set_exception(ValueError("head too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionResetError("closed"))


def connect_request(proxy: Proxy, host: str, port: int) -> bytes:
    authority = (f"[{host}]" if ":" in host else host).encode("ascii") + b":%d" % port
    lines = [b"CONNECT ", authority, b" HTTP/1.1\r\nHost: ", authority, b"\r\n"]
    if proxy.authorization is not None:
        lines += (b"Proxy-Authorization: ", proxy.authorization, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


async def open_tunnel(
    loop: asyncio.AbstractEventLoop, proxy: Proxy, host: str, port: int
) -> asyncio.BaseTransport:
    """A TCP connection to `proxy`, tunnelled to `host:port` by CONNECT, ready for TLS to the upstream.

    Raises `httpx.ConnectError` naming the proxy (never its credentials) when the proxy cannot be
    reached, refuses the tunnel (e.g. 407, 403) or does not answer in HTTP. The caller bounds the time.
    """
    try:
        transport, answer = await loop.create_connection(lambda: _ConnectAnswer(loop), proxy.host, proxy.port)
    except ConnectionRefusedError as exc:
        raise httpx.ConnectError(f"proxy {proxy.where} refused the connection") from exc
    except OSError as exc:
        raise httpx.ConnectError(f"proxy {proxy.where} is unreachable ({type(exc).__name__})") from exc
    try:
        transport.write(connect_request(proxy, host, port))
        try:
            head, extra = await answer.head
        except ConnectionResetError:
            raise httpx.ConnectError(f"proxy {proxy.where} closed the connection, no tunnel") from None
        except ValueError:
            raise httpx.ConnectError(f"proxy {proxy.where} answered CONNECT with a head too long") from None
        status = _status_of(head)
        if status is None:
            raise httpx.ConnectError(f"proxy {proxy.where} answered CONNECT with something that is not HTTP")
        if not 200 <= status < 300:
            raise httpx.ConnectError(f"proxy {proxy.where} refused the tunnel ({_status_text(status)})")
        if extra:  # a TLS server never speaks first: bytes after a 2xx head mean a broken proxy
            raise httpx.ConnectError(f"proxy {proxy.where} sent data before the tunnel's TLS began")
    except BaseException:
        if not answer.head.done():
            answer.head.cancel()  # nobody waits for it any more: no "exception never retrieved"
        transport.abort()
        raise
    return transport


def _status_of(head: bytes) -> int | None:
    status_line = head.split(b"\r\n", 1)[0]
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        return None
    return int(code)


def _status_text(status: int) -> str:
    """`HTTP 407 Proxy Authentication Required`: our own wording of the code, not the proxy's phrase."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def refusal(proxy: Proxy, status: int) -> httpx.ConnectError:
    """A forwarding proxy's own refusal of a plain-http request (407: it wants credentials)."""
    return httpx.ConnectError(f"proxy {proxy.where} refused the request ({_status_text(status)})")


__all__ = (
    "DIRECT",
    "ENVIRONMENT_VARIABLES",
    "Proxy",
    "ProxyPolicy",
    "ProxyURLError",
    "check",
    "open_tunnel",
    "parse_no_proxy",
    "parse_proxy_url",
    "proxy_password",
    "refusal",
    "resolve",
)
