"""Upstreams over HTTPS: the transport's TLS path, with a private CA and without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import trustme

from tests.e2e.conftest import CF_ACCOUNT, CF_TOKEN, GatewayFactory, cloudflare_backend, vllm_backend
from tests.emulators.server import ServerThread
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import WorkersAIEmulator

USER: Any = [{"role": "user", "content": "Say hello [[emu:words=6]]"}]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path, Path]:
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca, ca_file, cert_file, key_file


@pytest.fixture(scope="module")
def tls_upstreams(authority: tuple[trustme.CA, Path, Path, Path]) -> Iterator[tuple[str, str]]:
    _, _, cert_file, key_file = authority
    cloudflare = ServerThread(
        WorkersAIEmulator(account_id=CF_ACCOUNT, api_token=CF_TOKEN).app,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
    ).start()
    vllm = ServerThread(
        VLLMEmulator(api_key="vllm-key", served_models=["meta-llama/Llama-3.3-70B-Instruct"]).app,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
    ).start()
    yield cloudflare.url, vllm.url
    cloudflare.stop()
    vllm.stop()


def config(cloudflare_url: str, vllm_url: str, ca_file: str | None) -> dict[str, Any]:
    extra = {"tls_ca_file": ca_file} if ca_file else {}
    return {
        "backends": {
            "cloudflare": cloudflare_backend(cloudflare_url, **extra),
            "gpu": vllm_backend(vllm_url, api_key="vllm-key", **extra),
        },
        "models": {
            "cf": {
                "targets": [{"backend": "cloudflare", "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}]
            },
            "gpu": {"targets": [{"backend": "gpu", "model": "meta-llama/Llama-3.3-70B-Instruct"}]},
        },
    }


@pytest.mark.parametrize("model", ["cf", "gpu"])
def test_https_upstream_with_a_private_ca(
    start_gateway: GatewayFactory,
    tls_upstreams: tuple[str, str],
    authority: tuple[trustme.CA, Path, Path, Path],
    model: str,
) -> None:
    """Whole and streamed answers over TLS, connections reused across requests."""
    url = start_gateway(config(*tls_upstreams, str(authority[1])))
    with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        for _ in range(3):
            completion = client.chat.completions.create(model=model, messages=USER)
            assert len((completion.choices[0].message.content or "").split()) == 6
        chunks = list(client.chat.completions.create(model=model, messages=USER, stream=True))
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()
            == (completion.choices[0].message.content or "").split()
        )


def test_untrusted_certificate_is_a_clear_upstream_error(
    start_gateway: GatewayFactory, tls_upstreams: tuple[str, str]
) -> None:
    url = start_gateway(config(*tls_upstreams, None))
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        pytest.raises(openai.InternalServerError) as info,
    ):
        client.chat.completions.create(model="cf", messages=USER)
    assert info.value.code == "upstream_unreachable"
    assert "TLS certificate verification failed" in info.value.message
    assert CF_TOKEN not in info.value.response.text


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    from gateway.config import ConfigError, parse_config

    text = f"""
backends:
  gpu: {{kind: vllm, base_url: "https://gpu:8000/v1", tls_ca_file: {tmp_path / "nope.pem"}}}
models:
  m: {{targets: [{{backend: gpu, model: m}}]}}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ={})
    assert info.value.problems == [f"backends.gpu.tls_ca_file: no such file: {tmp_path / 'nope.pem'}"]
