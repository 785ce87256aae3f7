"""Egress proxies: real proxy processes (tests/proxy_server.py) between the gateway and the emulators.

https upstreams go through a CONNECT tunnel with TLS to the emulator inside it (the test CA), http
upstreams through absolute-form forwarding. The proxy comes from HTTPS_PROXY / HTTP_PROXY / NO_PROXY
(for a `gateway serve` process, whose environment the test sets) or from a backend's `proxy:`. A
proxy that refuses (407, 403) or hangs is an upstream failure like any other: the next target serves.
Proxy credentials never appear in the answer or in the gateway's output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import trustme

from tests import secret_scan
from tests.e2e.conftest import CF_TOKEN, GatewayFactory, cloudflare_backend, sdk_client, vllm_backend
from tests.emulators.server import ServerThread
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import WorkersAIEmulator
from tests.gateway_process import GatewayProcess
from tests.proxy_server import ProxyProcess

CF_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
VLLM_MODEL = "meta-llama/Llama-3.3-70B-Instruct"
USER: Any = [{"role": "user", "content": "Say hello [[emu:words=6]]"}]
PROXY_USER = "egress-user"
PROXY_PASSWORD = "proxy-pass-7c1e94b2"
CREDENTIALS = f"{PROXY_USER}:{PROXY_PASSWORD}"
WAIT_S = 1.0
"""The proxied backends' timeout: how long a hanging proxy is given before the next target."""


@pytest.fixture(scope="module", autouse=True)
def _register_proxy_secret() -> None:
    secret_scan.register(PROXY_PASSWORD, "the test proxy's password")


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("proxy-tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.cert_chain_pems[0].write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return paths


@pytest.fixture(scope="module")
def tls_workers_ai(ca_file: tuple[Path, Path, Path]) -> Iterator[str]:
    """The Workers AI emulator over https, with a certificate from the test CA."""
    server = ServerThread(
        WorkersAIEmulator(account_id="acct-e2e-5f3a", api_token=CF_TOKEN).app,
        ssl_certfile=str(ca_file[1]),
        ssl_keyfile=str(ca_file[2]),
    ).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def plain_vllm() -> Iterator[str]:
    server = ServerThread(VLLMEmulator(api_key="vllm-key", served_models=[VLLM_MODEL]).app).start()
    yield server.url
    server.stop()


@pytest.fixture
def open_proxy() -> Iterator[ProxyProcess]:
    with ProxyProcess(credentials=CREDENTIALS) as proxy:
        yield proxy


def proxied_config(
    workers_ai_url: str, ca_file: Path, *, proxy: str | None = None, fallback: bool = False
) -> dict[str, Any]:
    """Model `cf` on the https emulator (through `proxy`, or the environment's); with `fallback`, the
    mock as its second target."""
    backend = cloudflare_backend(workers_ai_url, tls_ca_file=str(ca_file), timeout_s=WAIT_S)
    if proxy is not None:
        backend["proxy"] = proxy
    targets = [{"backend": "cloudflare", "model": CF_MODEL}]
    backends: dict[str, Any] = {"cloudflare": backend}
    if fallback:
        backends["demo"] = {"kind": "mock", "token_delay_s": 0}
        targets.append({"backend": "demo", "model": "mock"})
    return {"backends": backends, "models": {"cf": {"targets": targets}}}


def ask(url: str, *, stream: bool = False) -> tuple[str, str | None]:
    """(answer text, x-gateway-backend) for one chat completion."""
    with sdk_client(url) as client:
        if stream:
            with client.chat.completions.with_streaming_response.create(
                model="cf", messages=USER, stream=True
            ) as response:
                text = "".join(
                    chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
                )
                return text, response.headers.get("x-gateway-backend")
        raw = client.chat.completions.with_raw_response.create(model="cf", messages=USER)
        return raw.parse().choices[0].message.content or "", raw.headers.get("x-gateway-backend")


def refused(url: str) -> openai.APIStatusError:
    with sdk_client(url) as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="cf", messages=USER)
    assert PROXY_PASSWORD not in info.value.response.text
    return info.value


# Through a backend's own `proxy:` (in-process gateway)


def test_tls_through_a_connect_tunnel_reuses_the_tunnel(
    start_gateway: GatewayFactory,
    tls_workers_ai: str,
    ca_file: tuple[Path, Path, Path],
    open_proxy: ProxyProcess,
) -> None:
    """Whole and streamed answers over TLS inside one CONNECT tunnel, kept alive across requests."""
    url = start_gateway(proxied_config(tls_workers_ai, ca_file[0], proxy=open_proxy.url))
    answers = [ask(url) for _ in range(3)]
    streamed = ask(url, stream=True)
    assert all(len(text.split()) == 6 and backend == "cloudflare" for text, backend in answers)
    assert streamed[0].split() == answers[0][0].split()
    stats = open_proxy.stats()
    authority = tls_workers_ai.removeprefix("https://")
    assert stats["tunnels"] == 1, stats  # four requests, one tunnel: the pooled connection is reused
    assert stats["targets"] == [f"CONNECT {authority}"]
    assert stats["auth_failures"] == 0


def test_wrong_credentials_407_fail_over(
    start_gateway: GatewayFactory,
    tls_workers_ai: str,
    ca_file: tuple[Path, Path, Path],
    open_proxy: ProxyProcess,
) -> None:
    wrong = open_proxy.url.replace(PROXY_PASSWORD, "not-the-password")
    url = start_gateway(proxied_config(tls_workers_ai, ca_file[0], proxy=wrong, fallback=True))
    text, backend = ask(url)
    assert backend == "demo"
    assert text
    assert open_proxy.stats()["auth_failures"] == 1

    alone = start_gateway(proxied_config(tls_workers_ai, ca_file[0], proxy=wrong))
    error = refused(alone)
    assert error.status_code == 502
    assert isinstance(error.body, dict)
    assert error.body.get("code") == "upstream_unreachable"
    assert (
        f"proxy {open_proxy.where} refused the tunnel (HTTP 407 Proxy Authentication Required)"
        in error.message
    )
    assert "not-the-password" not in error.response.text


@pytest.mark.parametrize(
    ("mode", "status", "code", "says"),
    [
        ("refuse", 502, "upstream_unreachable", "proxy {where} refused the tunnel (HTTP 403 Forbidden)"),
        ("hang", 504, "upstream_timeout", "not reached: proxy {where} opened no tunnel within 1 s"),
        (
            "garbage",
            502,
            "upstream_unreachable",
            "proxy {where} answered CONNECT with something that is not HTTP",
        ),
    ],
)
def test_a_failing_proxy_is_a_clear_error_and_fails_over(
    start_gateway: GatewayFactory,
    tls_workers_ai: str,
    ca_file: tuple[Path, Path, Path],
    mode: str,
    status: int,
    code: str,
    says: str,
) -> None:
    """A proxy that refuses (403), hangs, or does not speak HTTP: the next target answers; alone, the
    backend's error names the proxy and what it did."""
    with ProxyProcess(mode=mode, status=403) as proxy:
        url = start_gateway(proxied_config(tls_workers_ai, ca_file[0], proxy=proxy.url, fallback=True))
        assert ask(url)[1] == "demo"
        error = refused(start_gateway(proxied_config(tls_workers_ai, ca_file[0], proxy=proxy.url)))
        assert error.status_code == status
        assert isinstance(error.body, dict)
        assert error.body.get("code") == code
        assert says.format(where=proxy.where) in error.message
        stats = proxy.stats()
        assert stats["hung" if mode == "hang" else "refused"] == 2
        assert stats["tunnels"] == 0


def test_tls_inside_the_tunnel_still_verifies_the_certificate(
    start_gateway: GatewayFactory,
    tls_workers_ai: str,
    ca_file: tuple[Path, Path, Path],
    open_proxy: ProxyProcess,
) -> None:
    """Without the test CA, the upstream certificate fails verification inside the tunnel."""
    config = proxied_config(tls_workers_ai, ca_file[0], proxy=open_proxy.url)
    del config["backends"]["cloudflare"]["tls_ca_file"]
    error = refused(start_gateway(config))
    assert error.status_code == 502
    assert "TLS certificate verification failed" in error.message
    assert open_proxy.stats()["tunnels"] == 1


def test_unreachable_proxy_is_a_connect_error(
    start_gateway: GatewayFactory, tls_workers_ai: str, ca_file: tuple[Path, Path, Path]
) -> None:
    proxy = ProxyProcess()  # never started: nothing listens on its port
    url = start_gateway(proxied_config(tls_workers_ai, ca_file[0], proxy=proxy.url))
    error = refused(url)
    assert f"proxy {proxy.where} refused the connection" in error.message


def test_plain_http_upstream_is_forwarded_in_absolute_form(
    start_gateway: GatewayFactory, plain_vllm: str, open_proxy: ProxyProcess
) -> None:
    config = {
        "backends": {"gpu": vllm_backend(plain_vllm, api_key="vllm-key", proxy=open_proxy.url)},
        "models": {"cf": {"targets": [{"backend": "gpu", "model": VLLM_MODEL}]}},
    }
    url = start_gateway(config)
    assert len(ask(url)[0].split()) == 6
    assert len(ask(url, stream=True)[0].split()) == 6
    stats = open_proxy.stats()
    assert stats["forwarded"] >= 1
    assert stats["tunnels"] == 0
    assert f"POST {plain_vllm}/v1/chat/completions" in stats["targets"]


def test_forwarding_proxy_407_fails_over(
    start_gateway: GatewayFactory,
    workers_ai_server: tuple[WorkersAIEmulator, ServerThread],
    open_proxy: ProxyProcess,
) -> None:
    """A forwarding proxy's 407 is its own refusal, not the upstream's answer (the upstream is plain http
    Workers AI here: no health probe, so the request itself meets the refusal)."""
    wrong = open_proxy.url.replace(PROXY_PASSWORD, "not-the-password")
    url = start_gateway(proxied_config_http(workers_ai_server[1].url, wrong, fallback=True))
    assert ask(url)[1] == "demo"
    alone = start_gateway(proxied_config_http(workers_ai_server[1].url, wrong))
    error = refused(alone)
    assert error.status_code == 502
    assert (
        f"proxy {open_proxy.where} refused the request (HTTP 407 Proxy Authentication Required)"
        in error.message
    )
    assert open_proxy.stats()["auth_failures"] == 2


def proxied_config_http(workers_ai_url: str, proxy: str, *, fallback: bool = False) -> dict[str, Any]:
    config = {"backends": {"cloudflare": cloudflare_backend(workers_ai_url, proxy=proxy)}, "models": {}}
    targets: list[dict[str, str]] = [{"backend": "cloudflare", "model": CF_MODEL}]
    if fallback:
        config["backends"]["demo"] = {"kind": "mock", "token_delay_s": 0}
        targets.append({"backend": "demo", "model": "mock"})
    config["models"] = {"cf": {"targets": targets}}
    return config


# From the environment (`gateway serve` processes)


def test_environment_proxies_and_no_proxy(
    tmp_path: Path, tls_workers_ai: str, plain_vllm: str, ca_file: tuple[Path, Path, Path]
) -> None:
    """HTTPS_PROXY tunnels the https backend, HTTP_PROXY forwards the http one; NO_PROXY and
    `proxy: none` bypass them. The proxy's password is nowhere in the gateway's output."""
    config = proxied_config(tls_workers_ai, ca_file[0])
    config["backends"]["gpu"] = vllm_backend(plain_vllm, api_key="vllm-key")
    config["backends"]["direct"] = vllm_backend(plain_vllm, api_key="vllm-key", proxy="none")
    config["models"]["gpu"] = {"targets": [{"backend": "gpu", "model": VLLM_MODEL}]}
    config["models"]["direct"] = {"targets": [{"backend": "direct", "model": VLLM_MODEL}]}
    with ProxyProcess(credentials=CREDENTIALS) as proxy:
        env = {"HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url, "NO_PROXY": "example.internal"}
        with GatewayProcess(config, tmp_path, env=env) as gateway, sdk_client(gateway.url) as client:
            assert len(ask(gateway.url)[0].split()) == 6
            for model in ("gpu", "direct"):
                answer = client.chat.completions.create(model=model, messages=USER)
                assert len((answer.choices[0].message.content or "").split()) == 6
            output = gateway.output()
        stats = proxy.stats()
        assert stats["tunnels"] == 1, stats
        # `gpu`'s chat and its health probe went through the proxy; `direct` (same emulator) did not.
        assert stats["targets"].count(f"POST {plain_vllm}/v1/chat/completions") == 1, stats
        assert f"GET {plain_vllm}/health" in stats["targets"]
        assert PROXY_PASSWORD not in output

        env["NO_PROXY"] = "localhost, 127.0.0.0/8"
        with GatewayProcess(config, tmp_path, env=env) as gateway:
            assert len(ask(gateway.url)[0].split()) == 6
        assert proxy.stats()["tunnels"] == 1  # unchanged: 127.0.0.1 is in NO_PROXY's block


def test_malformed_environment_proxy_stops_start_up(tmp_path: Path, plain_vllm: str) -> None:
    config = {
        "backends": {"gpu": vllm_backend(plain_vllm, api_key="vllm-key")},
        "models": {"m": {"targets": [{"backend": "gpu", "model": VLLM_MODEL}]}},
    }
    gateway = GatewayProcess(config, tmp_path, env={"HTTPS_PROXY": f"socks5://u:{PROXY_PASSWORD}@p:1080"})
    with pytest.raises(RuntimeError) as info:
        gateway.start()
    gateway.stop()
    assert "HTTPS_PROXY: proxy scheme 'socks5' is not supported (only http:// proxies)" in str(info.value)
    assert PROXY_PASSWORD not in str(info.value)


def test_backend_proxy_is_validated_without_echoing_it() -> None:
    from gateway.config import ConfigError, parse_config

    text = f"""
backends:
  gpu: {{kind: vllm, base_url: "http://gpu:8000/v1", proxy: "https://u:{PROXY_PASSWORD}@proxy:443"}}
models:
  m: {{targets: [{{backend: gpu, model: m}}]}}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ={})
    assert info.value.problems == [
        "backends.gpu.proxy: proxy scheme 'https' is not supported (only http:// proxies)"
    ]
