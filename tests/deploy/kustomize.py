"""A small `kustomize build` for deploy/k8s, so the tests see exactly the objects `kubectl apply -k` would.

There is no kustomize binary in CI, so this renders the subset of kustomize the manifests use, with
kustomize's own rules:

- `resources`: YAML files (several documents each) and directories holding a kustomization.yaml;
- `namespace`: set on every namespaced object, including those from bases;
- `images`: `name` → `newName` / `newTag` / `digest`, on containers and init containers;
- `patches`: JSON 6902 patches (inline `patch` or `path`) with a `target` of kind and name;
- `configMapGenerator`: `files` (`key=path` or `path`) and `literals`, `behavior: create | replace | merge`;
  the name gets kustomize's content-hash suffix (the same 10 characters kustomize computes), and every
  reference from a pod template (volumes, projected volumes, env, envFrom) follows the new name.

Any other kustomization field raises `UnsupportedFeature`: keep the manifests inside this subset, or
teach the renderer the new feature (with a known-answer test from real kustomize in test_kustomize.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Final

import yaml

Manifest = dict[str, Any]

SUPPORTED_FIELDS: Final = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "images", "patches", "configMapGenerator"}
)
CLUSTER_SCOPED_KINDS: Final = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "PriorityClass",
        "StorageClass",
        "IngressClass",
        "RuntimeClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)
WORKLOAD_KINDS: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
GENERATED: Final = "__generated__"
"""Marks generated ConfigMaps while rendering: their names get the hash suffix at the very end."""


class UnsupportedFeature(Exception):
    """The kustomization uses something this renderer does not implement."""


def build(directory: Path) -> list[Manifest]:
    """Render the kustomization in `directory`, as `kustomize build directory` would."""
    resources = _build(directory)
    renames: dict[str, str] = {}
    for resource in resources:
        if resource.pop(GENERATED, False):
            name = resource["metadata"]["name"]
            renames[name] = f"{name}-{config_map_hash(resource)}"
            resource["metadata"]["name"] = renames[name]
    for resource in resources:
        for pod in pod_specs(resource):
            _rename_config_map_references(pod, renames)
    return resources


def _build(directory: Path) -> list[Manifest]:
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise UnsupportedFeature(f"{path}: {', '.join(sorted(unknown))}")
    resources: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources += _build(target)
        else:
            resources += [doc for doc in yaml.safe_load_all(target.read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        _generate_config_map(directory, generator, resources)
    for patch in kustomization.get("patches", []):
        _apply_patch(directory, patch, resources)
    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED_KINDS:
                resource["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for resource in resources:
            for pod in pod_specs(resource):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    container["image"] = _retag(container["image"], image)
    return resources


def pod_specs(resource: Manifest) -> list[Manifest]:
    """The pod specs inside a workload (its template's, a CronJob's job template's, or a Pod's own)."""
    kind = resource.get("kind")
    if kind == "Pod":
        return [resource["spec"]]
    if kind in WORKLOAD_KINDS:
        return [resource["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _generate_config_map(directory: Path, generator: Manifest, resources: list[Manifest]) -> None:
    unknown = set(generator) - {"name", "files", "literals", "behavior"}
    if unknown:
        raise UnsupportedFeature(f"configMapGenerator: {', '.join(sorted(unknown))}")
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, file = entry.rpartition("=")
        data[key or Path(file).name] = (directory / file).read_text()
    for entry in generator.get("literals", []):
        key, _, value = entry.partition("=")
        data[key] = value
    name = generator["name"]
    behavior = generator.get("behavior", "create")
    existing = [r for r in resources if r.get(GENERATED) and r["metadata"]["name"] == name]
    if behavior == "create":
        if existing:
            raise ValueError(f"configMapGenerator {name}: already generated by a base (use behavior)")
        resources.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": data,
                GENERATED: True,
            }
        )
        return
    if len(existing) != 1:
        raise ValueError(f"configMapGenerator {name}: behavior {behavior} needs exactly one base ConfigMap")
    if behavior == "replace":
        existing[0]["data"] = data
    elif behavior == "merge":
        existing[0]["data"] = {**existing[0].get("data", {}), **data}
    else:
        raise UnsupportedFeature(f"configMapGenerator {name}: behavior {behavior}")


def config_map_hash(config_map: Manifest) -> str:
    """kustomize's name suffix for a generated ConfigMap: 10 characters of a SHA-256 over its data.

    kustomize hashes `{"data": ..., "kind": "ConfigMap", "name": ""}` (the name field stays empty, so
    only the content counts) and maps 0, 1, 3, a, e to g, h, k, m, t so that no suffix reads as a number
    or a word. Checked against kustomize v5.5 in test_kustomize.py.
    """
    encoded = {"kind": "ConfigMap", "name": "", "data": config_map.get("data", {})}
    # Go's json.Marshal: sorted keys, no spaces, and HTML-safe escapes.
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _rename_config_map_references(pod: Manifest, renames: dict[str, str]) -> None:
    def rename(holder: Manifest | None) -> None:
        if holder is not None and holder.get("name") in renames:
            holder["name"] = renames[holder["name"]]

    for volume in pod.get("volumes", []):
        rename(volume.get("configMap"))
        for source in volume.get("projected", {}).get("sources", []):
            rename(source.get("configMap"))
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for env in container.get("env", []):
            rename(env.get("valueFrom", {}).get("configMapKeyRef"))
        for env_from in container.get("envFrom", []):
            rename(env_from.get("configMapRef"))


def _apply_patch(directory: Path, patch: Manifest, resources: list[Manifest]) -> None:
    unknown = set(patch) - {"target", "patch", "path"}
    target = patch.get("target", {})
    if unknown or set(target) - {"kind", "name"}:
        raise UnsupportedFeature(f"patches: {patch}")
    text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise UnsupportedFeature("patches: only JSON 6902 patches (a list of operations) are supported")
    matched = [
        r
        for r in resources
        if r["kind"] == target.get("kind", r["kind"]) and r["metadata"]["name"] == target.get("name")
    ]
    if not matched:
        raise ValueError(f"patch target {target} matches no resource")
    for resource in matched:
        for operation in operations:
            json_patch(resource, operation)


def json_patch(document: Manifest, operation: Manifest) -> None:
    """Apply one RFC 6902 `add`, `replace` or `remove` operation in place."""
    op = operation["op"]
    parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
    parent: Any = document
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(parent, list):
        if op == "add":
            parent.insert(len(parent) if last == "-" else int(last), value)
        elif op == "replace":
            parent[int(last)] = value
        elif op == "remove":
            del parent[int(last)]
        else:
            raise UnsupportedFeature(f"JSON patch op {op}")
    elif op in ("add", "replace"):
        if op == "replace" and last not in parent:
            raise KeyError(f"replace: {operation['path']} does not exist")
        parent[last] = value
    elif op == "remove":
        del parent[last]
    else:
        raise UnsupportedFeature(f"JSON patch op {op}")


def _retag(image: str, rule: Manifest) -> str:
    name, tag, digest = split_image(image)
    if name != rule["name"]:
        return image
    name = rule.get("newName", name)
    if "digest" in rule:
        return f"{name}@{rule['digest']}"
    tag = rule.get("newTag", tag)
    return f"{name}:{tag}" if tag else (f"{name}@{digest}" if digest else name)


def split_image(image: str) -> tuple[str, str, str]:
    """`registry:5000/repo/name:tag@sha256:...` → (name with registry, tag, digest)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest
    return name, "", digest


__all__ = ("UnsupportedFeature", "build", "config_map_hash", "json_patch", "pod_specs", "split_image")
