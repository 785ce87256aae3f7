"""The test renderer against real kustomize: inputs and the output `kubectl kustomize` (kustomize v5.5.0)
printed for them, so the Kubernetes tests check what `kubectl apply -k` would really apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import UnsupportedFeature, build

BASE_KUSTOMIZATION = """
resources: [app.yaml]
configMapGenerator:
  - name: settings
    literals: [LEVEL=info]
"""
BASE_APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      initContainers:
        - {name: init, image: "busybox:1.36"}
      containers:
        - name: app
          image: example/app:1.0
          env:
            - {name: A, value: "1"}
            - name: LEVEL
              valueFrom: {configMapKeyRef: {name: settings, key: LEVEL}}
          envFrom:
            - configMapRef: {name: settings}
      volumes:
        - name: settings
          configMap: {name: settings}
        - name: both
          projected:
            sources:
              - configMap: {name: settings}
              - configMap: {name: unrelated}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
"""
OVERLAY_KUSTOMIZATION = """
namespace: apps
resources: [../base]
images:
  - {name: example/app, newName: registry.example.com/app, newTag: "2.0"}
  - {name: busybox, digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"}
configMapGenerator:
  - name: settings
    behavior: merge
    literals: [LEVEL=debug, EXTRA=yes]
patches:
  - target: {kind: Deployment, name: app}
    patch: |-
      - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: B, value: "2"}}
      - {op: replace, path: /spec/template/spec/containers/0/env/0/value, value: "one"}
      - {op: add, path: /spec/replicas, value: 3}
      - {op: remove, path: /spec/template/spec/volumes/1/projected/sources/1}
"""
KUSTOMIZE_OUTPUT = """
apiVersion: v1
kind: Namespace
metadata:
  name: apps
---
apiVersion: v1
data:
  EXTRA: "yes"
  LEVEL: debug
kind: ConfigMap
metadata:
  name: settings-8bh5bt72bg
  namespace: apps
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: apps
spec:
  replicas: 3
  selector:
    matchLabels:
      app: app
  template:
    metadata:
      labels:
        app: app
    spec:
      containers:
      - env:
        - name: A
          value: one
        - name: LEVEL
          valueFrom:
            configMapKeyRef:
              key: LEVEL
              name: settings-8bh5bt72bg
        - name: B
          value: "2"
        envFrom:
        - configMapRef:
            name: settings-8bh5bt72bg
        image: registry.example.com/app:2.0
        name: app
      initContainers:
      - image: busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000
        name: init
      volumes:
      - configMap:
          name: settings-8bh5bt72bg
        name: settings
      - name: both
        projected:
          sources:
          - configMap:
              name: settings-8bh5bt72bg
"""


def write(files: dict[str, str], root: Path) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def by_name(resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def test_overlay_renders_as_kustomize_does(tmp_path: Path) -> None:
    """Base + overlay: namespace, images (tag, digest), a merged generator and references, JSON patches."""
    write(
        {
            "base/kustomization.yaml": BASE_KUSTOMIZATION,
            "base/app.yaml": BASE_APP,
            "overlay/kustomization.yaml": OVERLAY_KUSTOMIZATION,
        },
        tmp_path,
    )
    expected = [doc for doc in yaml.safe_load_all(KUSTOMIZE_OUTPUT) if doc]
    assert by_name(build(tmp_path / "overlay")) == by_name(expected)


def test_generated_config_map_names_carry_kustomizes_hash(tmp_path: Path) -> None:
    """Files, `key=path` files, literals, and characters Go's JSON encoder escapes (<, >, &, U+2028)."""
    write(
        {
            "a.yaml": "listen: {host: 0.0.0.0}\n",
            "b.txt": 'x: "<b> & \u00e9 \u2028"\n',
            "kustomization.yaml": (
                "configMapGenerator:\n"
                "  - {name: one, files: [a.yaml]}\n"
                "  - {name: two, files: [config.yaml=a.yaml, b.txt], literals: [MODE=fast, EMPTY=]}\n"
            ),
        },
        tmp_path,
    )
    names = {r["metadata"]["name"] for r in build(tmp_path)}
    assert names == {"one-k8gg7mbh9g", "two-94kk5ck99m"}  # kustomize v5.5.0's names for these inputs


@pytest.mark.parametrize(
    "kustomization",
    [
        "commonLabels: {team: x}\n",
        "secretGenerator: [{name: s, literals: [A=b]}]\n",
        "patches: [{target: {kind: Deployment, name: app}, patch: 'spec: {replicas: 2}'}]\n",
    ],
)
def test_features_the_renderer_lacks_are_refused(tmp_path: Path, kustomization: str) -> None:
    """A kustomization outside the supported subset fails loudly instead of rendering something else."""
    write({"kustomization.yaml": "resources: [app.yaml]\n" + kustomization, "app.yaml": BASE_APP}, tmp_path)
    with pytest.raises(UnsupportedFeature):
        build(tmp_path)
