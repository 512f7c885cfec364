"""deploy/kubernetes and deploy/kserve, checked offline.

- every manifest, and every object the overlay renders to, validates strictly (unknown fields
  rejected) against the Kubernetes schemas that kubernetes-validate bundles;
- the overlay is rendered by a small kustomize subset written here (there is no kubectl on the
  build machines): ``resources`` (files and folders), ``namespace``, ``labels``, ``images``,
  and ``patches`` by path as strategic merges (maps merged, lists of named items merged by
  name, other lists replaced) — the only features the files use; an unknown kustomization key
  fails the test, so the renderer and the files cannot drift apart silently;
- the InferenceService is walked against kserve's own model classes (every key must be a field
  of the CRD's type, recursively, down to the core Pod types).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAY = K8S / "overlays" / "hospital"
KSERVE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
K8S_VERSION = "1.33.0"

_KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# --------------------------------------------------------------------------- kustomize subset


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge of ``patch`` into ``base`` for the shapes the files use."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        named = all(isinstance(i, dict) and "name" in i for i in base + patch)
        if not named:
            return copy.deepcopy(patch)
        out_list = [copy.deepcopy(i) for i in base]
        for item in patch:
            at = next((k for k, b in enumerate(out_list) if b["name"] == item["name"]), None)
            if at is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[at] = _merge(out_list[at], item)
        return out_list
    return copy.deepcopy(patch)


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def render(folder: Path) -> list[dict[str, Any]]:
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(kust) <= _KUSTOMIZE_KEYS, f"renderer does not know {set(kust) - _KUSTOMIZE_KEYS}"
    objs: list[dict[str, Any]] = []
    for entry in kust.get("resources", []):
        path = (folder / entry).resolve()
        objs += render(path) if path.is_dir() else _docs(path)
    for patch_entry in kust.get("patches", []):
        assert set(patch_entry) == {"path"}, patch_entry
        for patch in _docs(folder / patch_entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            hits = [i for i, o in enumerate(objs) if (o["kind"], o["metadata"]["name"]) == key]
            assert len(hits) == 1, f"patch target {key} matches {len(hits)} objects"
            objs[hits[0]] = _merge(objs[hits[0]], patch)
    for entry in kust.get("labels", []):
        assert set(entry) <= {"pairs"}, "only plain labels (no selectors, no templates)"
        for obj in objs:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for image in kust.get("images", []):
        for obj in objs:
            for c in _containers(obj):
                name, _, _tag = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    if "namespace" in kust:
        for obj in objs:
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = kust["namespace"]
    return objs


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(OVERLAY)


def _one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


# --------------------------------------------------------------------------- the tests

_FILES = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
_PATCHES = {"deployment-patch.yaml", "hpa-patch.yaml"}


@pytest.mark.parametrize("path", _FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_each_file_validates(path: Path) -> None:
    if path.name in _PATCHES:
        pytest.skip("a partial object (validated after rendering)")
    for obj in _docs(path):
        _validate(obj)


def test_the_overlay_renders_to_valid_objects(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in rendered)
    assert kinds == sorted(
        [
            "Namespace/medserve",
            "ServiceAccount/medserve",
            "Secret/medserve",
            "Deployment/medserve",
            "Service/medserve",
            "HorizontalPodAutoscaler/medserve",
            "PodDisruptionBudget/medserve",
            "NetworkPolicy/medserve",
            "Secret/medserve-postgres",
            "StatefulSet/medserve-postgres",
            "Service/medserve-postgres",
            "NetworkPolicy/medserve-postgres",
        ]
    )
    for obj in rendered:
        _validate(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "medserve"
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "medserve"


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_the_deployment_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    deploy = _one(rendered, "Deployment", "medserve")
    assert deploy["spec"]["replicas"] == 3  # the overlay's patch
    pod = deploy["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert c["image"] == "registry.hospital.example/medserve:0.1.0"
    assert c["command"] == ["medserve", "serve"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    env = _env(c)
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000"
    assert env["MEDSERVE_DICOMWEB_URL"].startswith("http")  # merged in by the patch
    assert env["MEDSERVE_ORT_INTRA_OP_THREADS"] == c["resources"]["limits"]["cpu"]
    assert c["envFrom"] == [{"secretRef": {"name": "medserve"}}]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    secret = _one(rendered, "Secret", "medserve")["stringData"]
    assert secret["MEDSERVE_DATABASE_URL"].startswith("postgresql+psycopg://")
    # placeholders must fail closed: medserve refuses keys under 16 characters
    assert all(len(secret[k]) < 16 for k in ("MEDSERVE_API_KEYS", "MEDSERVE_ADMIN_KEYS"))


def test_selectors_match_and_the_service_reaches_the_pods(rendered: list[dict[str, Any]]) -> None:
    deploy = _one(rendered, "Deployment", "medserve")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        obj = _one(rendered, kind, "medserve")
        spec = obj["spec"]
        selector = spec.get("selector", spec.get("podSelector"))
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod_labels.items(), kind
    hpa = _one(rendered, "HorizontalPodAutoscaler", "medserve")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "medserve"
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    db = _one(rendered, "StatefulSet", "medserve-postgres")
    db_labels = db["spec"]["template"]["metadata"]["labels"]
    egress = _one(rendered, "NetworkPolicy", "medserve")["spec"]["egress"]
    assert any(
        t.get("podSelector", {}).get("matchLabels", {}).items() <= db_labels.items()
        for rule in egress
        for t in rule.get("to", [])
    )


# --------------------------------------------------------------------------- KServe

_LIST = re.compile(r"^[lL]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, |Dict\[str, )(.+)[)\]]$")
_PLAIN = {"str", "int", "bool", "float", "object", "datetime"}


def _model_class(name: str) -> Any:
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"no model class {name}")


def _walk(value: Any, type_name: str, where: str) -> None:
    """Every key of ``value`` is a field of the model type ``type_name`` (recursively)."""
    if type_name in _PLAIN or value is None:
        return
    if m := _LIST.match(type_name):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _walk(item, m.group(1), f"{where}[{i}]")
        return
    if m := _DICT.match(type_name):
        assert isinstance(value, dict), where
        for k, item in value.items():
            _walk(item, m.group(1), f"{where}.{k}")
        return
    cls = _model_class(type_name)
    if not cls.openapi_types:  # IntOrString, Quantity and the like
        return
    assert isinstance(value, dict), f"{where} should be an object ({type_name})"
    fields = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        assert key in fields, f"{where}.{key} is not a field of {type_name}"
        _walk(item, cls.openapi_types[fields[key]], f"{where}.{key}")


def test_the_inferenceservice_has_kserves_shape() -> None:
    pytest.importorskip("kserve")
    (isvc,) = _docs(KSERVE)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    _walk(isvc, "V1beta1InferenceService", "InferenceService")
    (c,) = isvc["spec"]["predictor"]["containers"]
    assert c["command"] == ["medserve", "serve"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert isvc["spec"]["predictor"]["automountServiceAccountToken"] is False
    # its pod parts are core Kubernetes: validate them as a Pod
    predictor = dict(isvc["spec"]["predictor"])
    pod_spec = {
        k: predictor[k]
        for k in ("containers", "volumes", "securityContext", "serviceAccountName")
        if k in predictor
    }
    pod_spec["automountServiceAccountToken"] = False
    _validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "medserve"}, "spec": pod_spec}
    )
