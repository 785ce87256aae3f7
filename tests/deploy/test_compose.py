"""deploy/compose.yaml: valid per the Compose Specification, wired as documented, and consistent with the
image, the gateway config it mounts, and nginx's upstream."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import yaml
from compose_spec import PyCompose

from adapters.proxy import ENVIRONMENT_VARIABLES
from adapters.vllm import VLLMConfig
from gateway.config import parse_config
from tests.deploy.helpers import (
    DEPLOY,
    REPO,
    check_config,
    compose_variables,
    config_variables,
    interpolate_compose,
)

if TYPE_CHECKING:
    from tests.deploy.dockerfile import ImageConfig

SERVICES: Final = {"proxy", "gateway", "redis", "vllm"}


def mounted_config(compose: dict[str, Any], image: ImageConfig) -> Path:
    """The host file the gateway service mounts where the image reads its config."""
    for volume in compose["services"]["gateway"]["volumes"]:
        source, target, *mode = volume.split(":")
        if target == image.env["GATEWAY_CONFIG"]:
            assert mode == ["ro"]
            path: Path = (DEPLOY / source).resolve()
            return path
    raise AssertionError("compose.yaml mounts no config at the image's GATEWAY_CONFIG")


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "exec form: no shell needed in the container"
    return " ".join(test[1:])


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """Parsed and validated by the Compose Specification's model (unknown keys, types, durations)."""
    parsed = PyCompose.from_yaml(yaml.safe_dump(compose))
    parsed.validate()
    assert set(parsed.service_names()) == SERVICES


def test_every_required_variable_is_documented_in_env_example(compose_env: dict[str, str]) -> None:
    """`${VAR:?...}` stops `docker compose up` when unset: each is in .env.example, and nothing else is."""
    used = compose_variables(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))
    required = {name for name, operator in used.items() if operator in (":?", "?")}
    assert required <= set(compose_env)
    assert set(compose_env) <= set(used)
    documented = (DEPLOY / ".env.example").read_text()
    for optional in set(used) - set(compose_env):
        assert f"# {optional}=" in documented, f"{optional} is not mentioned in .env.example"


def test_env_file_stays_out_of_git() -> None:
    ignored = (REPO / ".gitignore").read_text().split()
    assert ".env" in ignored  # deploy/.env holds the real tokens


def test_two_gateway_replicas_behind_the_proxy(compose: dict[str, Any], image: ImageConfig) -> None:
    services = compose["services"]
    gateway, proxy = services["gateway"], services["proxy"]
    assert gateway["deploy"]["replicas"] == 2
    assert "ports" not in gateway, "replicas cannot share a host port: only the proxy publishes one"
    assert gateway["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).resolve().is_file()
    # The proxy publishes its listen port and forwards to every replica on the image's port.
    [published] = proxy["ports"]
    host_port, container_port = published.rsplit(":", 1)
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.search(rf"^\s*listen {container_port};", conf, re.MULTILINE)
    assert re.search(rf"^\s*server gateway:{image.env['GATEWAY_PORT']} resolve;", conf, re.MULTILINE)
    assert re.search(r"^\s*proxy_buffering off;", conf, re.MULTILINE), "SSE must not be buffered"
    assert re.search(r"^\s*resolver 127\.0\.0\.11 ", conf, re.MULTILINE), "Docker's DNS finds the replicas"
    assert any(v.startswith("./nginx.conf:/etc/nginx/nginx.conf") for v in proxy["volumes"])
    assert host_port == "8080"
    assert gateway["stop_grace_period"]
    assert gateway["read_only"] is True
    assert proxy["read_only"] is True


def test_healthchecks(compose: dict[str, Any], image: ImageConfig) -> None:
    services = compose["services"]
    port = image.env["GATEWAY_PORT"]
    assert f"http://127.0.0.1:{port}/healthz" in healthcheck_command(services["gateway"])
    assert "http://127.0.0.1:8080/healthz" in healthcheck_command(services["proxy"])
    assert healthcheck_command(services["redis"]) == "redis-cli ping"
    assert "http://127.0.0.1:8000/health" in healthcheck_command(services["vllm"])
    for service in services.values():
        assert {"interval", "timeout", "retries"} <= set(service["healthcheck"])


def test_start_order_waits_for_health_but_never_for_the_gpu(compose: dict[str, Any]) -> None:
    """The gateway waits for Redis; the proxy waits for the gateway; vLLM (minutes to load) is optional."""
    services = compose["services"]
    assert services["proxy"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert services["gateway"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert "depends_on" not in services["vllm"]
    assert "depends_on" not in services["redis"]


def test_vllm_runs_on_an_nvidia_gpu_with_tool_calling(compose: dict[str, Any], image: ImageConfig) -> None:
    vllm = compose["services"]["vllm"]
    name, _, tag = vllm["image"].partition(":")
    assert name == "vllm/vllm-openai"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), vllm["image"]
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert device["count"] >= 1
    args = vllm["command"]
    assert "--enable-auto-tool-choice" in args
    assert args[args.index("--tool-call-parser") + 1] == "llama3_json"
    # The model cache is a named volume at Hugging Face's cache directory.
    volume, _, target = vllm["volumes"][0].partition(":")
    assert volume in compose["volumes"]
    assert target == "/root/.cache/huggingface"
    assert vllm["ipc"] == "host"
    # The gateway config targets the name vLLM serves, at the vllm service's address, with the same key.
    served = args[args.index("--served-model-name") + 1]
    gateway_env = compose["services"]["gateway"]["environment"]
    settings = parse_config(mounted_config(compose, image).read_text(), environ=gateway_env).settings
    local = {name: b for name, b in settings.backends.items() if isinstance(b, VLLMConfig)}
    assert local, "the compose config has a vLLM backend"
    for backend in local.values():
        url = httpx.URL(backend.base_url)
        assert (url.host, url.port, url.path) == ("vllm", 8000, "/v1")
        assert backend.api_key == vllm["environment"]["VLLM_API_KEY"]
    targeted = {t.model for m in settings.models.values() for t in m.targets if t.backend in local}
    assert targeted == {served}


def test_cloudflare_models_fail_over_to_the_local_gpu(compose: dict[str, Any], image: ImageConfig) -> None:
    """The example the stack exists for: a Cloudflare target first, then the local vLLM."""
    gateway_env = compose["services"]["gateway"]["environment"]
    settings = parse_config(mounted_config(compose, image).read_text(), environ=gateway_env).settings
    kinds = {name: type(b).__name__ for name, b in settings.backends.items()}
    orders = [[kinds[t.backend] for t in m.targets] for m in settings.models.values()]
    assert ["WorkersAIConfig", "VLLMConfig"] in orders


def test_gateway_reaches_redis_by_service_name(compose: dict[str, Any]) -> None:
    url = httpx.URL(compose["services"]["gateway"]["environment"]["REDIS_URL"])
    assert (url.scheme, url.host, url.port) == ("redis", "redis", 6379)
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    assert "--maxmemory-policy" in command


def test_mounted_config_passes_check_config(compose: dict[str, Any], image: ImageConfig) -> None:
    """`gateway check-config` with exactly the environment the gateway service gets (.env.example values)."""
    result = check_config(mounted_config(compose, image), compose["services"]["gateway"]["environment"])
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_config_variables_are_exactly_what_the_service_provides(
    compose: dict[str, Any], image: ImageConfig
) -> None:
    environment = compose["services"]["gateway"]["environment"]
    assert isinstance(environment, dict), "a mapping, so names can be compared"
    used = config_variables(mounted_config(compose, image).read_text())
    # Besides the config's ${VAR}s: the image's own variables and the egress proxies, which the
    # transport reads from the environment itself.
    assert set(used) == set(environment) - set(image.env) - ENVIRONMENT_VARIABLES
    assert set(environment) - set(used) <= set(image.env) | ENVIRONMENT_VARIABLES


def test_without_an_env_file_compose_names_the_missing_variable() -> None:
    """With no deploy/.env, `docker compose up` stops and says which variable to set, and where."""
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    with pytest.raises(KeyError, match=r"CLOUDFLARE_ACCOUNT_ID: set CLOUDFLARE_ACCOUNT_ID in deploy/\.env"):
        interpolate_compose(document, {})


def merge_compose(base: Any, override: Any) -> Any:
    """`docker compose -f base -f override`: mappings merge key by key; `expose` and `ports` are joined."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if key in ("expose", "ports") and key in merged:
                merged[key] = [*merged[key], *(v for v in value if v not in merged[key])]
            else:
                merged[key] = merge_compose(merged[key], value) if key in merged else value
        return merged
    return override


def test_gateway_container_is_hardened(compose: dict[str, Any], image: ImageConfig) -> None:
    """The image's non-root user, read-only root, tmpfs /tmp (the only path it writes), no capabilities."""
    gateway = compose["services"]["gateway"]
    assert image.user is not None
    assert gateway["user"] == image.user
    assert int(gateway["user"].split(":")[0]) != 0
    assert gateway["read_only"] is True
    assert [t.split(":")[0] for t in gateway["tmpfs"]] == ["/tmp"]
    assert gateway["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in gateway["security_opt"]


def test_egress_proxies_reach_the_gateway_and_in_stack_backends_go_direct(
    compose: dict[str, Any], image: ImageConfig
) -> None:
    environment = compose["services"]["gateway"]["environment"]
    assert {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"} <= set(environment)
    assert environment["HTTPS_PROXY"] == ""  # unset in .env.example: direct
    settings = parse_config(mounted_config(compose, image).read_text(), environ=environment).settings
    for name, backend in settings.backends.items():
        host = httpx.URL(getattr(backend, "base_url", "https://api.cloudflare.com")).host
        if host in compose["services"]:
            assert backend.proxy == "none", f"{name} is a service of the stack: never through the proxy"
    documented = (DEPLOY / ".env.example").read_text()
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        assert f"# {name}=" in documented


def test_admin_override_adds_an_internal_port_only(
    compose: dict[str, Any], compose_env: dict[str, str]
) -> None:
    """compose.admin.yaml: valid merged with compose.yaml; 8081 is exposed on the stack's network, never
    published on the host, and nginx does not forward to it; its key is required and documented."""
    override_text = (DEPLOY / "compose.admin.yaml").read_text()
    override = yaml.safe_load(override_text)
    used = compose_variables(override)
    assert used == {"GATEWAY_ADMIN_KEY": ":?"}
    assert "# GATEWAY_ADMIN_KEY=" in (DEPLOY / ".env.example").read_text()
    with pytest.raises(KeyError, match="GATEWAY_ADMIN_KEY"):
        interpolate_compose(override, compose_env)  # not in .env.example's values: it must be set
    merged = merge_compose(compose, interpolate_compose(override, {"GATEWAY_ADMIN_KEY": "k" * 32}))
    PyCompose.from_yaml(yaml.safe_dump(merged)).validate()
    gateway = merged["services"]["gateway"]
    assert gateway["expose"] == ["8081"]
    assert "ports" not in gateway
    for service in merged["services"].values():
        assert all("8081" not in str(port) for port in service.get("ports", []))
    assert "8081" not in (DEPLOY / "nginx.conf").read_text()
    assert gateway["environment"]["CLOUDFLARE_API_TOKEN"], "the override adds to the base environment"
