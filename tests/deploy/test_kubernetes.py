"""deploy/k8s: every overlay rendered as kustomize would, validated against the Kubernetes JSON schemas,
its references resolved, and its gateway config and probes tried on a real gateway."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from adapters.proxy import ENVIRONMENT_VARIABLES, ProxyPolicy
from adapters.vllm import VLLMConfig
from adapters.workers_ai import WorkersAIConfig
from gateway.app import create_app
from gateway.config import Settings, parse_config
from tests.deploy.helpers import (
    K8S,
    OVERLAYS,
    check_config,
    config_variables,
    container_environment,
    find,
    secret_values,
)
from tests.deploy.kustomize import build, pod_specs, split_image
from tests.emulators.server import serve
from tests.emulators.vllm import VLLMEmulator
from tests.emulators.workers_ai import WorkersAIEmulator

if TYPE_CHECKING:
    from tests.deploy.dockerfile import ImageConfig
    from tests.redis_server import RedisServer

Resources = list[dict[str, Any]]

GATEWAY: Final = "llm-gateway"
KUBERNETES_VERSIONS: Final = ("1.29", kv_utils.latest_version())
"""The oldest release still under (extended) support on the big clouds, and the newest the schemas know."""

_LABEL_SELECTOR: Final = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": False,
}
_DURATION: Final = {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SCHEMA: Final = {
    "$comment": "The fields of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) we use, "
    "with the CRD's types; any other field is refused so a typo cannot pass.",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


def by_kind(resources: Resources, kind: str) -> Resources:
    return [r for r in resources if r["kind"] == kind]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def gateway_container(resources: Resources) -> dict[str, Any]:
    containers = find(resources, "Deployment", GATEWAY)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["gateway"]
    container: dict[str, Any] = containers[0]
    return container


def gateway_config_text(resources: Resources, image: ImageConfig) -> str:
    """The config file the gateway container reads: the ConfigMap key mounted at $GATEWAY_CONFIG."""
    pod = find(resources, "Deployment", GATEWAY)["spec"]["template"]["spec"]
    directory, filename = posixpath.split(image.env["GATEWAY_CONFIG"])
    mounts = [m for m in gateway_container(resources)["volumeMounts"] if m["mountPath"] == directory]
    assert len(mounts) == 1, f"nothing mounted at {directory}, where the image reads its config"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    data = find(resources, "ConfigMap", volume["configMap"]["name"])["data"]
    assert filename in data, f"the ConfigMap has no key {filename}"
    text: str = data[filename]
    return text


def workload_pods(resources: Resources) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) for every workload."""
    return [(r, pod) for r in resources for pod in pod_specs(r)]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_matches_the_kubernetes_schemas(
    rendered: dict[str, Resources], overlay: str, version: str
) -> None:
    """Strict schemas: unknown fields, wrong types and missing required fields all fail."""
    problems = []
    for resource in rendered[overlay]:
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        if resource["kind"] == "ServiceMonitor":
            validator = jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA)
            problems += [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(resource)]
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kv_utils.ValidationError as exc:
            problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kv_utils.SchemaNotFoundError as exc:
            problems.append(f"{where}: {exc.message}")
    assert problems == []


def test_service_monitor_schema_refuses_what_the_crd_refuses() -> None:
    """The hand-written ServiceMonitor schema is not a rubber stamp."""
    good = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "http", "interval": "30s"}]},
    }
    validator = jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA)
    assert list(validator.iter_errors(good)) == []
    for bad_endpoint in ({"port": "http", "interval": "30 seconds"}, {"prot": "http"}, {"port": 8080}):
        bad = {**good, "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [bad_endpoint]}}
        assert list(validator.iter_errors(bad)), bad_endpoint


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_install_in_one_namespace(
    rendered: dict[str, Resources], overlay: str
) -> None:
    resources = rendered[overlay]
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    assert {
        ("Namespace", "llm-gateway"),
        ("ServiceAccount", GATEWAY),
        ("Secret", GATEWAY),
        ("Deployment", GATEWAY),
        ("Service", GATEWAY),
        ("PodDisruptionBudget", GATEWAY),
        ("HorizontalPodAutoscaler", GATEWAY),
        ("ServiceMonitor", GATEWAY),
        ("StatefulSet", "redis"),
        ("Service", "redis"),
        ("NetworkPolicy", "redis"),
    } <= names
    config_maps = sorted(c["metadata"]["name"] for c in by_kind(resources, "ConfigMap"))
    assert len(config_maps) == 2
    assert config_maps[0].startswith("llm-gateway-config-")  # kustomize's hash suffix
    assert config_maps[1].startswith("llm-gateway-egress-")
    if overlay == "gpu":
        assert {"vllm"} == {d["metadata"]["name"] for d in by_kind(resources, "Deployment")} - {GATEWAY}
        assert by_kind(resources, "PersistentVolumeClaim")
    namespace = find(resources, "Namespace", "llm-gateway")["metadata"]["name"]
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == namespace, resource["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_resolves(rendered: dict[str, Resources], overlay: str) -> None:
    """Selectors select, named ports exist, and every ConfigMap, Secret key, PVC and account used exists."""
    resources = rendered[overlay]
    pods = workload_pods(resources)
    for workload, pod in pods:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(workload["spec"]["selector"]["matchLabels"], labels)
        if "serviceAccountName" in pod:
            find(resources, "ServiceAccount", pod["serviceAccountName"])
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                find(resources, "ConfigMap", volume["configMap"]["name"])
            if "persistentVolumeClaim" in volume:
                find(resources, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        for container in pod["containers"]:
            container_environment(container, resources)  # asserts every referenced key exists
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod.get("volumes", [])}
    for service in by_kind(resources, "Service"):
        matched = [
            (w, p)
            for w, p in pods
            if selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert matched, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            named = {
                p["name"]: p["containerPort"]
                for _, pod in matched
                for c in pod["containers"]
                for p in c.get("ports", [])
            }
            assert port["targetPort"] in named or port["targetPort"] in named.values(), port
    for selecting in by_kind(resources, "PodDisruptionBudget") + by_kind(resources, "NetworkPolicy"):
        selector = selecting["spec"].get("selector", selecting["spec"].get("podSelector"))["matchLabels"]
        assert any(selects(selector, w["spec"]["template"]["metadata"]["labels"]) for w, _ in pods)
    for policy in by_kind(resources, "NetworkPolicy"):
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                selector = peer["podSelector"]["matchLabels"]
                assert any(selects(selector, w["spec"]["template"]["metadata"]["labels"]) for w, _ in pods)
    for autoscaler in by_kind(resources, "HorizontalPodAutoscaler"):
        target = autoscaler["spec"]["scaleTargetRef"]
        find(resources, target["kind"], target["name"])
    for monitor in by_kind(resources, "ServiceMonitor"):
        services = [
            s
            for s in by_kind(resources, "Service")
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        assert len(services) == 1, f"ServiceMonitor {monitor['metadata']['name']} should select one Service"
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_deployment_is_ready_for_production(
    rendered: dict[str, Resources], image: ImageConfig, overlay: str
) -> None:
    resources = rendered[overlay]
    deployment = find(resources, "Deployment", GATEWAY)
    pod = deployment["spec"]["template"]["spec"]
    container = gateway_container(resources)
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # Probes: readiness on /readyz, liveness and start-up on /healthz, on the port the image listens on.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == int(image.env["GATEWAY_PORT"])
    assert container["env"][0] == {"name": "GATEWAY_WORKERS", "value": "1"}
    # Draining: preStop keeps the pod serving while it leaves the endpoints, then streams get their time.
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + 120  # at least 2 minutes for streams
    # The gateway's own grace period ends before Kubernetes' SIGKILL: streams are cut cleanly, not killed.
    grace = yaml.safe_load(gateway_config_text(resources, image))["http"]["shutdown_grace_s"]
    assert 120 <= grace <= pod["terminationGracePeriodSeconds"] - int(sleep[1]) - 5
    # Resources: requests (the HPA's yardstick) and limits.
    for field in ("cpu", "memory"):
        assert container["resources"]["requests"][field]
        assert container["resources"]["limits"][field]
    # Spread over zones and nodes.
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in pod["topologySpreadConstraints"]:
        assert selects(
            constraint["labelSelector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
        )
    # Locked down: the image's non-root user, read-only root filesystem, no privileges.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert image.user is not None
    assert str(pod["securityContext"]["runAsUser"]) == image.user.split(":")[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False
    # A pinned image: a tag that is not `latest`, or a digest.
    _, tag, digest = split_image(container["image"])
    assert digest or (tag and tag != "latest"), container["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_and_disruption_budget_keep_two_replicas(
    rendered: dict[str, Resources], overlay: str
) -> None:
    resources = rendered[overlay]
    autoscaler = find(resources, "HorizontalPodAutoscaler", GATEWAY)["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": GATEWAY}
    assert autoscaler["minReplicas"] >= 2
    assert autoscaler["maxReplicas"] > autoscaler["minReplicas"]
    assert [m["resource"]["name"] for m in autoscaler["metrics"]] == ["cpu"]
    assert autoscaler["minReplicas"] == find(resources, "Deployment", GATEWAY)["spec"]["replicas"]
    budget = find(resources, "PodDisruptionBudget", GATEWAY)["spec"]
    assert budget["maxUnavailable"] == 1  # with at least two replicas, one always serves


RESTRICTED_VOLUMES: Final = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def pod_security_violations(pod: dict[str, Any], level: str) -> list[str]:
    """The Pod Security Standards' checks for `baseline` (and, for `restricted`, its extra ones)."""
    problems = []
    pod_context = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(key)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            problems.append(f"hostPath volume {volume['name']}")
        if level == "restricted" and not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume type {kinds}")
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container.get("securityContext", {})
        name = container["name"]
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if any(p.get("hostPort") for p in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
        if level != "restricted":
            continue
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_meet_the_pod_security_level_their_namespace_enforces(
    rendered: dict[str, Resources], overlay: str
) -> None:
    resources = rendered[overlay]
    labels = find(resources, "Namespace", "llm-gateway")["metadata"]["labels"]
    enforced = labels["pod-security.kubernetes.io/enforce"]
    for workload, pod in workload_pods(resources):
        assert pod_security_violations(pod, enforced) == [], workload["metadata"]["name"]
        if workload["metadata"]["name"] in (GATEWAY, "redis"):  # ours meet `restricted` everywhere
            assert pod_security_violations(pod, "restricted") == [], workload["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_config_passes_check_config_with_the_pod_environment(
    rendered: dict[str, Resources], image: ImageConfig, overlay: str, tmp_path: Path
) -> None:
    """`gateway check-config` with exactly the environment the pod gets (the Secrets' placeholder values)."""
    resources = rendered[overlay]
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_config_text(resources, image))
    result = check_config(path, container_environment(gateway_container(resources), resources))
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_variables_are_exactly_what_the_pod_provides(
    rendered: dict[str, Resources], image: ImageConfig, overlay: str
) -> None:
    """Every ${VAR} the config reads is set in the pod; every variable set is read by the config or image."""
    resources = rendered[overlay]
    environ = container_environment(gateway_container(resources), resources)
    used = config_variables(gateway_config_text(resources, image))
    # Besides the config's ${VAR}s: the image's own variables and the egress proxies (read by the
    # transport itself, from the llm-gateway-egress ConfigMap).
    assert set(used) == set(environ) - set(image.env) - ENVIRONMENT_VARIABLES
    assert set(environ) - set(used) <= set(image.env) | ENVIRONMENT_VARIABLES
    assert all(environ[name] for name, has_default in used.items() if not has_default)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_backend_addresses_point_at_the_services(
    rendered: dict[str, Resources], image: ImageConfig, overlay: str
) -> None:
    """REDIS_URL names the Redis Service's port; a vLLM base_url names the vllm Service's port and /v1."""
    resources = rendered[overlay]
    environ = container_environment(gateway_container(resources), resources)
    redis = httpx.URL(environ["REDIS_URL"])
    service = find(resources, "Service", redis.host)
    assert redis.port in {p["port"] for p in service["spec"]["ports"]}
    find(resources, "StatefulSet", redis.host)
    settings = parse_config(gateway_config_text(resources, image), environ=environ).settings
    vllm_backends = [b for b in settings.backends.values() if isinstance(b, VLLMConfig)]
    assert bool(vllm_backends) == (overlay == "gpu")
    for backend in vllm_backends:
        url = httpx.URL(backend.base_url)
        assert url.path == "/v1"
        vllm_service = find(resources, "Service", url.host)
        assert url.port in {p["port"] for p in vllm_service["spec"]["ports"]}


def test_vllm_runs_on_a_gpu_node_with_tool_calling_and_a_model_cache(
    rendered: dict[str, Resources], image: ImageConfig
) -> None:
    resources = rendered["gpu"]
    deployment = find(resources, "Deployment", "vllm")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    name, tag, _ = split_image(container["image"])
    assert name == "vllm/vllm-openai"
    assert tag.startswith("v"), container["image"]
    assert (
        container["resources"]["limits"]["nvidia.com/gpu"]
        == container["resources"]["requests"]["nvidia.com/gpu"]
    )
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert pod["nodeSelector"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    args = container["args"]
    assert "--enable-auto-tool-choice" in args
    assert args[args.index("--tool-call-parser") + 1] == "llama3_json"
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert container[probe]["httpGet"]["port"] in {p["name"] for p in container["ports"]}
    # The model cache: HF_HOME on the PersistentVolumeClaim's mount.
    environ = container_environment(container, resources)
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    mount = next(m for m in container["volumeMounts"] if m["name"] == claim["name"])
    assert environ["HF_HOME"].startswith(mount["mountPath"] + "/")
    # The gateway targets the name vLLM serves, and both sides hold the same key.
    served = args[args.index("--served-model-name") + 1]
    gateway_environ = container_environment(gateway_container(resources), resources)
    settings = parse_config(gateway_config_text(resources, image), environ=gateway_environ).settings
    vllm_names = {n for n, b in settings.backends.items() if isinstance(b, VLLMConfig)}
    targeted = {t.model for m in settings.models.values() for t in m.targets if t.backend in vllm_names}
    assert targeted == {served}
    assert gateway_environ["VLLM_API_KEY"] == environ["VLLM_API_KEY"]
    port = next(p["containerPort"] for p in container["ports"])
    assert args[args.index("--port") + 1] == str(port)


def test_placeholder_secrets_are_marked(rendered: dict[str, Resources]) -> None:
    """Secrets committed to git hold only clearly marked placeholders (and the bundled Redis's address)."""
    for overlay in OVERLAYS:
        for secret in by_kind(rendered[overlay], "Secret"):
            for key, value in secret_values(secret).items():
                assert value.startswith("REPLACE-ME") or key == "REDIS_URL", (secret["metadata"]["name"], key)


def point_at_emulators(settings: Settings, workers_ai_url: str, vllm_url: str) -> Settings:
    backends: dict[str, Any] = {}
    for name, backend in settings.backends.items():
        if isinstance(backend, WorkersAIConfig):
            backends[name] = msgspec.structs.replace(backend, base_url=f"{workers_ai_url}/client/v4")
        else:
            assert isinstance(backend, VLLMConfig), backend
            backends[name] = msgspec.structs.replace(backend, base_url=f"{vllm_url}/v1")
    return msgspec.structs.replace(settings, backends=backends)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_answer_on_a_gateway_running_the_configmap_config(
    rendered: dict[str, Resources], image: ImageConfig, overlay: str, redis_server: RedisServer
) -> None:
    """The ConfigMap's config, the pod's variables (test values), emulated upstreams: every probe gets 200."""
    resources = rendered[overlay]
    container = gateway_container(resources)
    environ = container_environment(container, resources)
    test_values = {
        "CLOUDFLARE_ACCOUNT_ID": "acct-deploy-test",
        "CLOUDFLARE_API_TOKEN": "cf-deploy-test-token",
        "REDIS_URL": redis_server.url,
        "VLLM_API_KEY": "vllm-deploy-test-key",
    }
    for name in set(test_values) - set(environ):
        del test_values[name]
    environ.update(test_values)
    settings = parse_config(gateway_config_text(resources, image), environ=environ).settings
    workers_ai = WorkersAIEmulator(
        account_id=environ["CLOUDFLARE_ACCOUNT_ID"], api_token=environ["CLOUDFLARE_API_TOKEN"]
    )
    vllm_names = {n for n, b in settings.backends.items() if isinstance(b, VLLMConfig)}
    served = sorted({t.model for m in settings.models.values() for t in m.targets if t.backend in vllm_names})
    vllm = VLLMEmulator(api_key=environ.get("VLLM_API_KEY", ""), served_models=served or ["unused"])
    with serve(workers_ai.app) as workers_ai_server, serve(vllm.app) as vllm_server:
        settings = point_at_emulators(settings, workers_ai_server.url, vllm_server.url)
        with serve(create_app(settings), lifespan="on") as gateway:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                path = container[probe]["httpGet"]["path"]
                response = httpx.get(f"{gateway.url}{path}", timeout=5)
                assert response.status_code == 200, (probe, path, response.text)


ADMIN_PORT: Final = 8081


@pytest.fixture(scope="module")
def with_admin(tmp_path_factory: pytest.TempPathFactory) -> Resources:
    """The cloudflare-only overlay with ../../admin added, as an overlay opting in would have it."""
    directory = tmp_path_factory.mktemp("admin-overlay")
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "llm-gateway",
                "resources": [str(K8S / "overlays" / "cloudflare-only"), str(K8S / "admin")],
            }
        )
    )
    return build(directory)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_admin_listener_manifests_match_the_schemas(with_admin: Resources, version: str) -> None:
    for resource in with_admin:
        if resource["metadata"]["name"].startswith("llm-gateway-admin"):
            kubernetes_validate.validate(resource, version, strict=True)


def test_admin_port_is_reachable_inside_the_cluster_only(with_admin: Resources) -> None:
    """A ClusterIP Service on the container's `admin` port; the public Service never exposes it; the
    NetworkPolicy keeps the public port open and the admin port to labelled client pods."""
    container = gateway_container(with_admin)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == ADMIN_PORT
    admin = find(with_admin, "Service", "llm-gateway-admin")
    assert admin["metadata"]["namespace"] == "llm-gateway"
    assert admin["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in admin["spec"]["ports"]] == [(ADMIN_PORT, "admin")]
    labels = find(with_admin, "Deployment", GATEWAY)["spec"]["template"]["metadata"]["labels"]
    assert selects(admin["spec"]["selector"], labels)
    public = find(with_admin, "Service", GATEWAY)
    assert all(p["targetPort"] not in ("admin", ADMIN_PORT) for p in public["spec"]["ports"])
    for service in by_kind(with_admin, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
    assert not by_kind(with_admin, "Ingress")
    # Probes never depend on the admin listener (it may not be configured).
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    policy = find(with_admin, "NetworkPolicy", "llm-gateway-admin")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert set(rules) == {"http", "admin"}
    assert "from" not in rules["http"], "the public port stays open to every client"
    assert rules["admin"]["from"] == [{"podSelector": {"matchLabels": {"llm-gateway/admin-client": "true"}}}]


def test_admin_listener_is_opt_in(rendered: dict[str, Resources]) -> None:
    """The overlays as shipped leave it out: nothing points at a port that may not be listening."""
    for resources in rendered.values():
        assert not [r for r in resources if r["metadata"]["name"].startswith("llm-gateway-admin")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_proxy_environment_is_valid_and_in_cluster_backends_go_direct(
    rendered: dict[str, Resources], image: ImageConfig, overlay: str
) -> None:
    """The pod's HTTPS_PROXY/HTTP_PROXY/NO_PROXY (empty by default) parse, NO_PROXY covers cluster names,
    and every backend addressed by a Service name has `proxy: none`."""
    resources = rendered[overlay]
    environ = container_environment(gateway_container(resources), resources)
    assert environ["HTTPS_PROXY"] == environ["HTTP_PROXY"] == ""
    assert ProxyPolicy.from_environment(environ) is None  # empty: direct connections
    assert {".svc", ".cluster.local"} <= set(environ["NO_PROXY"].split(","))
    with_proxy = {**environ, "HTTPS_PROXY": "http://egress.internal:3128"}
    policy = ProxyPolicy.from_environment(with_proxy)
    assert policy is not None
    assert policy.for_origin("https", "api.cloudflare.com", 443) is not None
    assert policy.for_origin("http", "redis.llm-gateway.svc", 6379) is None
    settings = parse_config(gateway_config_text(resources, image), environ=with_proxy).settings
    services = {s["metadata"]["name"] for s in by_kind(resources, "Service")}
    for name, backend in settings.backends.items():
        host = httpx.URL(getattr(backend, "base_url", "https://api.cloudflare.com")).host
        if host in services:
            assert backend.proxy == "none", f"{name} is in the cluster: it must not use the egress proxy"
