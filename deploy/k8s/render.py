"""Render a kustomize overlay without kubectl: only the kustomize features deploy/k8s/ uses.

    python deploy/k8s/render.py deploy/k8s/cpu > facegate-cpu.yaml

`kubectl kustomize` (kustomize v5 is built into kubectl >= 1.27) is the reference; this exists because CI has no
kubectl to install (Debian packages kubectl 1.20, whose kustomize predates `labels` and `patches`).
tests/test_k8s.py renders every overlay with both where kubectl is present and requires the same objects.

Supported, and refused when anything else appears in a kustomization.yaml:
- `resources`: YAML files (several documents each) and directories holding a kustomization.yaml
- `namespace`: set on every namespaced object (and on a Namespace object, its name, as kustomize does)
- `labels` (pairs, includeSelectors, includeTemplates) and the older `commonLabels`
- `images` (name, newName, newTag, digest) on containers and initContainers of pod templates
- `patches` with `path` (strategic merge, the target named by the patch's own kind and metadata.name)

Strategic merge: maps merge key by key (a null value deletes the key); lists whose Kubernetes patch merge key is
known (containers and initContainers by name, env by name, volumes by name, volumeMounts by mountPath, container
ports by containerPort) merge item by item, in kustomize's order: the patch's items first, then the base's others;
every other list is replaced.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

KNOWN_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "commonLabels", "images", "patches"}
# Cluster-scoped kinds among those deploy/k8s uses or may use (the namespace transformer leaves them alone).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
}
# Kinds whose pod template is at spec.template (kustomize's includeTemplates / images field specs).
TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
# Field name -> patch merge key, from the Kubernetes API's x-kubernetes-patch-merge-key for the fields we patch.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
# Selector paths kustomize updates for labels with includeSelectors (commonLabels always).
SELECTOR_PATHS: dict[str, list[tuple[str, ...]]] = {
    "Service": [("spec", "selector")],
    "Deployment": [("spec", "selector", "matchLabels")],
    "StatefulSet": [("spec", "selector", "matchLabels")],
    "DaemonSet": [("spec", "selector", "matchLabels")],
    "ReplicaSet": [("spec", "selector", "matchLabels")],
    "PodDisruptionBudget": [("spec", "selector", "matchLabels")],
}


class RenderError(ValueError):
    pass


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def render(directory: str | Path) -> list[dict[str, Any]]:
    """Every object of the kustomization in `directory`, transformed, in resource order."""
    directory = Path(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.exists():
        raise RenderError(f"{directory} has no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - KNOWN_FIELDS
    if unknown:
        raise RenderError(f"{kfile}: unsupported kustomize fields {sorted(unknown)} (use kubectl kustomize)")

    objects: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        target = directory / entry
        if target.is_dir():
            objects.extend(render(target))
        elif target.is_file():
            objects.extend(load_documents(target))
        else:
            raise RenderError(f"{kfile}: resource {entry} does not exist")
    _check_unique(objects, kfile)

    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise RenderError(f"{kfile}: only `patches: - path: FILE` is supported, got {patch}")
        for doc in load_documents(directory / patch["path"]):
            apply_patch(objects, doc, where=f"{kfile}: {patch['path']}")
    if "namespace" in k:
        for obj in objects:
            set_namespace(obj, k["namespace"])
    for spec in k.get("labels", []):
        unknown = set(spec) - {"pairs", "includeSelectors", "includeTemplates"}
        if unknown:
            raise RenderError(f"{kfile}: unsupported labels options {sorted(unknown)}")
        for obj in objects:
            add_labels(
                obj,
                spec["pairs"],
                selectors=spec.get("includeSelectors", False),
                templates=spec.get("includeTemplates", False) or spec.get("includeSelectors", False),
            )
    if k.get("commonLabels"):
        for obj in objects:
            add_labels(obj, k["commonLabels"], selectors=True, templates=True)
    for image in k.get("images", []):
        unknown = set(image) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise RenderError(f"{kfile}: unsupported images options {sorted(unknown)}")
        for obj in objects:
            set_image(obj, image)
    return objects


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj.get("kind", ""), obj.get("metadata", {}).get("namespace", ""), obj.get("metadata", {}).get("name", "")


def _check_unique(objects: list[dict[str, Any]], where: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        if _key(obj) in seen:
            raise RenderError(f"{where}: {_key(obj)} appears twice")
        seen.add(_key(obj))


def apply_patch(objects: list[dict[str, Any]], patch: dict[str, Any], *, where: str) -> None:
    kind, name = patch.get("kind"), patch.get("metadata", {}).get("name")
    hits = [o for o in objects if o.get("kind") == kind and o.get("metadata", {}).get("name") == name]
    if len(hits) != 1:
        raise RenderError(f"{where}: patch target {kind}/{name} matches {len(hits)} objects")
    merged = strategic_merge(hits[0], patch)
    hits[0].clear()
    hits[0].update(merged)


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        # kustomize's order: the patch's items first (merged with their base item), then the base's other items
        mk = MERGE_KEYS[field]
        by_key = {b.get(mk): b for b in base if isinstance(b, dict)}
        out: list[Any] = []
        for item in patch:
            if not isinstance(item, dict) or mk not in item:
                raise RenderError(f"list `{field}` items need their merge key `{mk}`: {item}")
            if "$patch" in item:
                raise RenderError("$patch directives are not supported")
            old = by_key.get(item[mk])
            out.append(copy.deepcopy(item) if old is None else strategic_merge(old, item, None))
        patched = {item[mk] for item in patch}
        out.extend(copy.deepcopy(b) for b in base if not (isinstance(b, dict) and b.get(mk) in patched))
        return out
    return copy.deepcopy(patch)


def set_namespace(obj: dict[str, Any], namespace: str) -> None:
    if obj.get("kind") == "Namespace":
        obj["metadata"]["name"] = namespace
    elif obj.get("kind") not in CLUSTER_SCOPED:
        obj.setdefault("metadata", {})["namespace"] = namespace


def _get(obj: dict[str, Any], path: Iterable[str]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def add_labels(obj: dict[str, Any], pairs: dict[str, str], *, selectors: bool, templates: bool) -> None:
    obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    kind = obj.get("kind")
    if templates and kind in TEMPLATE_KINDS:
        obj["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if selectors:
        for path in SELECTOR_PATHS.get(kind or "", []):
            parent = _get(obj, path[:-1])
            if isinstance(parent, dict):
                parent.setdefault(path[-1], {}).update(pairs)


def split_image(image: str) -> tuple[str, str]:
    """(name, the tag or digest part with its separator)."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def set_image(obj: dict[str, Any], rule: dict[str, str]) -> None:
    if obj.get("kind") not in TEMPLATE_KINDS:
        return
    pod = obj["spec"]["template"].get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name, suffix = split_image(container.get("image", ""))
        if name != rule["name"]:
            continue
        name = rule.get("newName", name)
        if "digest" in rule:
            suffix = "@" + rule["digest"]
        elif "newTag" in rule:
            suffix = ":" + str(rule["newTag"])
        container["image"] = name + suffix


def dump(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    sys.stdout.write(dump(render(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
