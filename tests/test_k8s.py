"""deploy/k8s/ without a cluster: render both overlays, validate every object strictly against the Kubernetes API
schemas (and the CloudNativePG Cluster against its vendored CRD schema), enforce the security and resource
policies here and with checkov where the tool venv exists, and keep ports, env vars, probes, images and sizes in
step with the services' settings, as tests/test_deploy.py does for docker-compose."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from services.stack import SERVICES

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy/k8s"
OVERLAYS = ("cpu", "gpu")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
# The oldest Kubernetes the manifests claim (README) and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CHECKOV = REPO / ".venv-tools/checkov/bin/checkov"  # `make k8s-tools` (part of `make test`)

SETTINGS = {
    "embedder": ("services.embedder.settings", "EmbedderSettings"),
    "matcher": ("services.matcher.settings", "MatcherSettings"),
    "gateway": ("services.gateway.settings", "GatewaySettings"),
}
# Service-to-service authentication (issue 14, on its own branch when this was written): the names its settings and
# docker-compose use. Accepted before those settings exist; once they do, they are checked like any other field.
ISSUE14_ENV = {
    "embedder": {"FACEGATE_EMBEDDER_INTERNAL_TOKEN"},
    "matcher": {"FACEGATE_MATCHER_INTERNAL_TOKEN"},
    "gateway": {"FACEGATE_GATEWAY_EMBEDDER_TOKEN", "FACEGATE_GATEWAY_MATCHER_TOKEN"},
}
# Every Secret the manifests read, by name and key; the README's "Secrets" step creates facegate-internal with these
# keys, and CloudNativePG creates facegate-db-app.
SECRET_KEYS = {
    ("facegate-db-app", "uri"),
    ("facegate-internal", "embedder-token"),
    ("facegate-internal", "matcher-token"),
    ("facegate-internal", "redis-password"),
    ("facegate-internal", "bootstrap-admin-key"),
}


def _load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()
RENDERED: dict[str, list[dict[str, Any]]] = {o: render.render(K8S / o) for o in OVERLAYS}


def objects(overlay: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [o for o in RENDERED[overlay] if kind is None or o["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{overlay}: {kind}/{name} x {len(hits)}"
    return hits[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def workloads(overlay: str) -> list[dict[str, Any]]:
    return [o for o in RENDERED[overlay] if o["kind"] in ("Deployment", "Job")]


def container(overlay: str, service: str) -> dict[str, Any]:
    (c,) = pod_spec(one(overlay, "Deployment", service))["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def settings_fields(service: str) -> tuple[str, dict[str, Any]]:
    module, name = SETTINGS[service]
    cls: Any = getattr(importlib.import_module(module), name)
    return cls.model_config["env_prefix"], {f.upper(): info for f, info in cls.model_fields.items()}


def setting_default(service: str, field: str) -> Any:
    _, fields = settings_fields(service)
    return fields[field.upper()].default


def cpu_cores(quantity: str | int) -> float:
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def mem_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([KMGT]i?)?", str(quantity))
    assert m, quantity
    return int(m.group(1)) * units.get(m.group(2) or "", 1)


def parse_size(text: str) -> int:
    """nginx sizes: 520m = 520 MiB."""
    m = re.fullmatch(r"(\d+)([kmg]?)", text.lower())
    assert m, text
    return int(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]


# --- rendering -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlays are rendered by deploy/k8s/render.py only")
    version = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True)
    kustomize = json.loads(version.stdout or "{}").get("kustomizeVersion", "")
    if not re.match(r"v?[5-9]\.", kustomize):
        pytest.skip(f"kubectl's kustomize is {kustomize or 'unknown'}; v5 is the reference")
    out = subprocess.run([kubectl, "kustomize", str(K8S / overlay)], capture_output=True, text=True, check=True)

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=key)
    ours = sorted(RENDERED[overlay], key=key)
    assert [key(o) for o in ours] == [key(o) for o in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a == b, f"{key(a)} differs from kubectl kustomize's"


def test_renderer_merges_the_way_kustomize_does() -> None:
    base = {
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "image": "img/a",
                            "env": [{"name": "P", "value": "1"}, {"name": "Q", "value": "2"}],
                        },
                        {"name": "b", "image": "img/b:1"},
                    ],
                    "tolerations": [{"key": "t1"}],
                    "nodeSelector": {"k": "v"},
                }
            }
        },
    }
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "a", "env": [{"name": "Q", "value": "3"}, {"name": "R", "value": "4"}]}],
                    "tolerations": [{"key": "t2"}],
                    "nodeSelector": {"k": None, "gpu": "yes"},
                }
            }
        }
    }
    merged = render.strategic_merge(base, patch)
    pod = merged["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["a", "b"]
    # the patch's items first, then the base's others (kustomize's order; $(VAR) expansion depends on it)
    assert pod["containers"][0]["env"] == [
        {"name": "Q", "value": "3"},
        {"name": "R", "value": "4"},
        {"name": "P", "value": "1"},
    ]
    assert pod["containers"][0]["image"] == "img/a"
    assert pod["tolerations"] == [{"key": "t2"}], "lists without a merge key are replaced"
    assert pod["nodeSelector"] == {"gpu": "yes"}, "null deletes a key"
    assert base["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] == "2", "the base is not modified"

    render.set_image(merged, {"name": "img/b", "newName": "reg/b", "newTag": "2"})
    render.set_image(merged, {"name": "img/a", "digest": "sha256:" + "0" * 64})
    assert [c["image"] for c in pod["containers"]] == ["img/a@sha256:" + "0" * 64, "reg/b:2"]
    assert render.split_image("reg:5000/x/y:1.2") == ("reg:5000/x/y", ":1.2")
    assert render.split_image("reg:5000/x/y") == ("reg:5000/x/y", "")


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(render.RenderError, match="namePrefix"):
        render.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches:\n  - path: p.yaml\n    target: {kind: X}\n")
    with pytest.raises(render.RenderError, match="only `patches: - path: FILE`"):
        render.render(tmp_path)


# --- schemas ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly_against_the_kubernetes_api(overlay: str, k8s_version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    builtin = [
        o for o in RENDERED[overlay] if "." not in o["apiVersion"].split("/")[0] or ".k8s.io/" in o["apiVersion"]
    ]
    custom = [o for o in RENDERED[overlay] if o not in builtin]
    assert {o["kind"] for o in custom} == {"Cluster"}, "every other kind must be validated here"
    for obj in builtin:
        kubernetes_validate.validate(obj, k8s_version, strict=True)


def test_the_validator_is_strict() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    bad = copy.deepcopy(one("cpu", "Deployment", "gateway"))
    pod_spec(bad)["containers"][0]["readinessProbes"] = pod_spec(bad)["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[0], strict=True)


def _strict_crd_schema(schema: Any) -> Any:
    """The CRD's structural schema as JSON Schema that refuses unknown fields (kubectl's --validate=strict)."""
    if isinstance(schema, dict):
        out = {k: _strict_crd_schema(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict_crd_schema(v) for v in schema]
    return schema


def _validate_cluster(cluster: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="comes with kubernetes-validate (.[dev])")
    crd = json.loads((K8S / "schemas/postgresql.cnpg.io_v1_cluster.json").read_text())
    assert cluster["apiVersion"] == f"{crd['group']}/{crd['version']}" and cluster["kind"] == crd["kind"]
    schema = _strict_crd_schema(crd["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object", "required": ["name"]}
    jsonschema.validate(cluster, schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_cluster_validates_against_the_cloudnativepg_crd(overlay: str) -> None:
    _validate_cluster(one(overlay, "Cluster", "facegate-db"))
    jsonschema = pytest.importorskip("jsonschema")
    typo = copy.deepcopy(one(overlay, "Cluster", "facegate-db"))
    typo["spec"]["postgresql"]["synchronus"] = typo["spec"]["postgresql"].pop("synchronous")
    with pytest.raises(jsonschema.ValidationError):
        _validate_cluster(typo)


# --- policies (enforced here whether or not checkov is installed) -----------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_restricted(overlay: str) -> None:
    """The "restricted" Pod Security Standard the namespace enforces, plus a read-only root and limits."""
    ns = one(overlay, "Namespace", "facegate")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for w in workloads(overlay):
        where = f"{overlay} {w['kind']}/{w['metadata']['name']}"
        pod = pod_spec(w)
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["serviceAccountName"] != "default", where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] >= 10000, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert not sc.get("privileged"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            assert mem_bytes(c["resources"]["requests"]["memory"]) <= mem_bytes(c["resources"]["limits"]["memory"])
            _name, tag = render.split_image(c["image"])
            assert tag and tag != ":latest", f"{where}: image {c['image']} must be pinned"
            assert c.get("imagePullPolicy") == "Always", where
            if w["kind"] == "Deployment":
                assert "readinessProbe" in c and "livenessProbe" in c, where
            # a writable /tmp only, and bounded
            for m in c.get("volumeMounts", []):
                vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
                assert "emptyDir" in vol and vol["emptyDir"]["sizeLimit"], f"{where}: {m}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined(overlay: str) -> None:
    assert not objects(overlay, "Secret"), "Secrets are created outside the manifests (README)"
    assert not objects(overlay, "ConfigMap")
    referenced = set()
    for w in workloads(overlay):
        for c in pod_spec(w)["containers"]:
            defined: list[str] = []
            for e in c.get("env", []):
                name = e["name"]
                if re.search(r"TOKEN|PASSWORD|SECRET|_KEY$|DATABASE_URL", name):
                    assert "secretKeyRef" in e.get("valueFrom", {}), f"{name} must come from a Secret"
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
                # $(VAR) expands only from variables defined earlier in the list
                for var in re.findall(r"\$\(([A-Z0-9_]+)\)", e.get("value", "")):
                    assert var in defined, f"{name} uses $({var}) before it is defined"
                    assert not re.search(r"://[^/]*:[^$/@]+@", e["value"]), f"{name} inlines a password"
                defined.append(name)
    assert referenced == SECRET_KEYS
    readme = (REPO / "README.md").read_text()
    for name, key in SECRET_KEYS - {("facegate-db-app", "uri")}:
        assert f"--from-literal={key}=" in readme, f"the README's secret step must create {name}/{key}"


def _checkov_results(scan_dir: Path) -> list[dict[str, Any]]:
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", LOG_LEVEL="ERROR")
    out = subprocess.run(
        [str(CHECKOV), "-d", str(scan_dir), "--framework", "kubernetes", "--skip-download", "--quiet", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    data = json.loads(out.stdout)
    return data if isinstance(data, list) else [data]


def test_checkov_policy_scan_passes_with_justified_waivers(tmp_path: Path) -> None:
    if not CHECKOV.exists():
        why = "checkov's own venv is absent: `make k8s-tools` (part of `make test`) builds .venv-tools/checkov"
        if os.environ.get("FACEGATE_REQUIRE_CHECKOV", "0") != "0":
            pytest.fail(f"FACEGATE_REQUIRE_CHECKOV=1: {why}")
        pytest.skip(why)
    for overlay in OVERLAYS:
        (tmp_path / f"{overlay}.yaml").write_text(render.dump(RENDERED[overlay]))
    (report,) = _checkov_results(tmp_path)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results.get("failed_checks", [])]
    assert not failed, f"checkov failures: {failed}"
    assert report["summary"]["passed"] > 0 and report["summary"]["parsing_errors"] == 0
    waived = {c["check_id"] for c in results.get("skipped_checks", [])}
    assert waived <= {"CKV_K8S_43", "CKV_K8S_35"}, f"a new waiver needs its reason in the README: {waived}"
    for c in results.get("skipped_checks", []):
        assert len(c.get("suppress_comment") or "") > 20, f"{c['check_id']} on {c['resource']} needs a reason"


# --- in step with the code ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_ports_probes_and_services_match_the_code(overlay: str, spec: Any) -> None:
    c = container(overlay, spec.name)
    env = env_of(c)
    assert c["ports"] == [{"name": "http", "containerPort": spec.port}]
    assert env["PORT"]["value"] == str(spec.port), "the Dockerfile's CMD binds ${PORT}"
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # the startup probe gives at least the supervisor's own readiness budget for the process to listen
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= min(spec.ready_timeout_s, 120)
    svc = one(overlay, "Service", spec.name)
    assert svc["spec"]["ports"] == [{"name": "http", "port": spec.port, "targetPort": "http"}]
    deployment = one(overlay, "Deployment", spec.name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod_spec(deployment)["serviceAccountName"] == spec.name


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_probe_paths_are_served(spec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGATE_MATCHER_DATABASE_URL", "postgresql://probe@localhost/probe")
    app = importlib.import_module(f"{spec.module}.app").create_app()
    paths = app.openapi()["paths"]
    assert "get" in paths["/healthz"] and "get" in paths["/readyz"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_env_var_is_a_setting(overlay: str, service: str) -> None:
    prefix, fields = settings_fields(service)
    env = env_of(container(overlay, service))
    for key in (k for k in env if k.startswith("FACEGATE_")):
        assert key.startswith(prefix), f"{key} is not read by the {service}"
        name = key[len(prefix) :]
        if name in fields:
            value = env[key].get("value")
            if value is not None:  # the value parses as the setting's type
                TypeAdapter(fields[name].annotation).validate_python(value)
        else:
            assert key in ISSUE14_ENV[service], f"{key} is not a field of the {service}'s settings"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_required_settings_and_tokens_are_given(overlay: str, service: str) -> None:
    prefix, fields = settings_fields(service)
    env = env_of(container(overlay, service))
    for name, info in fields.items():
        if info.is_required() or name.endswith("TOKEN"):
            assert f"{prefix}{name}" in env, f"{prefix}{name} must be set"
    for key in ISSUE14_ENV[service]:
        assert key in env, f"{key} (issue 14) must come from the Secret facegate-internal"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_points_at_the_services(overlay: str) -> None:
    env = env_of(container(overlay, "gateway"))
    ports = {s.name: s.port for s in SERVICES}
    assert env["FACEGATE_GATEWAY_EMBEDDER_URL"]["value"] == f"http://embedder:{ports['embedder']}"
    assert env["FACEGATE_GATEWAY_MATCHER_URL"]["value"] == f"http://matcher:{ports['matcher']}"
    # a streamed burst's calls: one embedder pod per burst, from a headless Service listing every ready pod
    pods = one(overlay, "Service", "embedder-pods")["spec"]
    assert pods["clusterIP"] == "None" and pods["selector"] == one(overlay, "Service", "embedder")["spec"]["selector"]
    assert env["FACEGATE_GATEWAY_EMBEDDER_STREAM_URL"]["value"] == f"http://embedder-pods:{pods['ports'][0]['port']}"
    redis_svc = one(overlay, "Service", "redis")
    redis_port = redis_svc["spec"]["ports"][0]["port"]
    assert env["FACEGATE_GATEWAY_REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@redis:{redis_port}/0"
    # the tokens the gateway presents are the ones the services check
    tokens = {k: v["valueFrom"]["secretKeyRef"] for k, v in env.items() if k.endswith("_TOKEN")}
    for service in ("embedder", "matcher"):
        theirs = env_of(container(overlay, service))[f"FACEGATE_{service.upper()}_INTERNAL_TOKEN"]
        assert tokens[f"FACEGATE_GATEWAY_{service.upper()}_TOKEN"] == theirs["valueFrom"]["secretKeyRef"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_database_and_migration_job(overlay: str) -> None:
    cluster = one(overlay, "Cluster", "facegate-db")
    assert cluster["spec"]["instances"] >= 3, "one primary and at least two replicas"
    assert cluster["spec"]["bootstrap"]["initdb"]["database"] == "facegate"
    assert "CREATE EXTENSION IF NOT EXISTS vector" in cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]
    assert re.match(r"ghcr\.io/cloudnative-pg/postgresql:16\.\d+-standard-", cluster["spec"]["imageName"])
    db = {"secretKeyRef": {"name": "facegate-db-app", "key": "uri"}}
    assert env_of(container(overlay, "matcher"))["FACEGATE_MATCHER_DATABASE_URL"]["valueFrom"] == db
    assert env_of(container(overlay, "gateway"))["FACEGATE_GATEWAY_DATABASE_URL"]["valueFrom"] == db
    job = one(overlay, "Job", "facegate-migrate")
    (c,) = pod_spec(job)["containers"]
    assert c["command"] == ["alembic", "upgrade", "head"]
    assert env_of(c)["FACEGATE_DATABASE_URL"]["valueFrom"] == db
    assert c["image"] == container(overlay, "matcher")["image"], "migrations ship in the matcher's image"
    assert (REPO / "alembic.ini").exists() and (REPO / "migrations/env.py").exists()

    # max_connections covers every pod at its pools' ceiling: matcher 2 x (pool + overflow) (its README), gateway
    # pool + overflow (= db_pool_size each), the migration, and CloudNativePG's reserved and replication slots
    matcher_each = 2 * (setting_default("matcher", "pool_size") + setting_default("matcher", "max_overflow"))
    gateway_each = 2 * setting_default("gateway", "db_pool_size")
    matchers = one(overlay, "Deployment", "matcher")["spec"]["replicas"] + 1  # + a rolling update's surge
    gateways = one(overlay, "HorizontalPodAutoscaler", "gateway")["spec"]["maxReplicas"] + 1
    needed = matchers * matcher_each + gateways * gateway_each + 1 + 10
    assert int(cluster["spec"]["postgresql"]["parameters"]["max_connections"]) >= needed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_the_release(overlay: str) -> None:
    for spec in SERVICES:
        image = container(overlay, spec.name)["image"]
        name, tag = render.split_image(image)
        assert name.endswith(f"/{spec.name}"), image
        gpu = overlay == "gpu" and spec.name == "embedder"
        assert tag == f":{VERSION}" + ("-gpu" if gpu else ""), f"{image}: tag the pyproject version"


def test_embedder_threads_fit_its_cpus_and_the_gpu_overlay_uses_the_gpu() -> None:
    for overlay in OVERLAYS:
        c = container(overlay, "embedder")
        threads = int(env_of(c)["FACEGATE_EMBEDDER_THREADS"]["value"])
        assert threads == cpu_cores(c["resources"]["limits"]["cpu"]) == cpu_cores(c["resources"]["requests"]["cpu"])
    cpu, gpu = container("cpu", "embedder"), container("gpu", "embedder")
    assert env_of(cpu)["FACEGATE_EMBEDDER_DEVICE"]["value"] == "cpu"
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert env_of(gpu)["FACEGATE_EMBEDDER_DEVICE"]["value"] == "gpu"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == gpu["resources"]["requests"]["nvidia.com/gpu"] == 1
    pod = pod_spec(one("gpu", "Deployment", "embedder"))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # the -gpu image is the Dockerfile's TF_PACKAGE build at the version pyproject pins (as compose's GPU override)
    pinned = next(d for d in PYPROJECT["project"]["optional-dependencies"]["embedder"] if d.startswith("tensorflow"))
    gpu_kustomization = (K8S / "gpu/kustomization.yaml").read_text()
    assert f"TF_PACKAGE='tensorflow[and-cuda]=={pinned.split('==')[1]}'" in gpu_kustomization
    for key in ("nodeSelector", "tolerations"):
        assert key not in pod_spec(one("cpu", "Deployment", "embedder"))
    assert pod_spec(one("gpu", "Deployment", "matcher")) == pod_spec(one("cpu", "Deployment", "matcher"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_matcher_memory_holds_its_resident_budget(overlay: str) -> None:
    from services.contracts.models import DEFAULT_MODEL_ID

    dim = int(re.search(r"-(\d+)$", DEFAULT_MODEL_ID).group(1))  # type: ignore[union-attr]
    c = container(overlay, "matcher")
    budget = int(env_of(c)["FACEGATE_MATCHER_RESIDENT_MAX_TEMPLATES"]["value"])
    # services/matcher/README.md: about dim * 4 + 200 bytes a template; ~105 MB measured for the process itself
    needed = budget * (dim * 4 + 200) + 300 * 2**20
    assert mem_bytes(c["resources"]["limits"]["memory"]) >= needed
    assert int(env_of(c)["FACEGATE_MATCHER_RESIDENT_BUILD_THREADS"]["value"]) <= cpu_cores(
        c["resources"]["limits"]["cpu"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_exposes_only_the_gateway_and_admits_its_largest_body(overlay: str) -> None:
    (ingress,) = objects(overlay, "Ingress")
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"gateway"}
    # the gateway's own body limit for imports (services/gateway/bodylimit.py): the zip + 6 MB of CSV and form
    largest = setting_default("gateway", "import_max_zip_bytes") + 6 * 2**20
    body = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert parse_size(body) >= largest
    # ... and the gateway's memory holds one such import (imports.py parses the zip's bytes in memory) beside itself
    limit = mem_bytes(container(overlay, "gateway")["resources"]["limits"]["memory"])
    assert limit >= setting_default("gateway", "import_max_zip_bytes") + 512 * 2**20
    for svc in objects(overlay, "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", "nothing else is exposed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_disruption_budgets(overlay: str) -> None:
    hpas = {h["metadata"]["name"]: h for h in objects(overlay, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"gateway", "embedder"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpas["gateway"]["spec"]["metrics"]] == ["cpu"]
    (metric,) = hpas["embedder"]["spec"]["metrics"]
    if overlay == "cpu":
        assert metric["resource"]["name"] == "cpu"
    else:
        assert metric["pods"]["metric"]["name"] == "facegate_embedder_seconds_per_image"
        # the series it is computed from exists in the embedder's metrics
        from services.embedder import metrics

        assert metrics.STAGE_SECONDS._name == "facegate_embedder_stage_seconds"
        rule = (K8S / "gpu/embedder-hpa.yaml").read_text()
        assert 'facegate_embedder_stage_seconds_count{stage="total"}' in rule
    pdbs = {p["metadata"]["name"]: p for p in objects(overlay, "PodDisruptionBudget")}
    assert set(pdbs) == {"gateway", "embedder", "matcher"}, "Redis is one cache pod; CloudNativePG makes its own"
    for name, pdb in pdbs.items():
        deployment = one(overlay, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]


# --- network policies: who can reach whom ------------------------------------------------------------------------

# (name, namespace, pod labels) of every party; CloudNativePG's instance pods carry cnpg.io/cluster.
PARTIES = {
    "gateway": ("facegate", {"app.kubernetes.io/name": "gateway"}),
    "embedder": ("facegate", {"app.kubernetes.io/name": "embedder"}),
    "matcher": ("facegate", {"app.kubernetes.io/name": "matcher"}),
    "migrate": ("facegate", {"app.kubernetes.io/name": "migrate"}),
    "redis": ("facegate", {"app.kubernetes.io/name": "redis"}),
    "postgres": ("facegate", {"cnpg.io/cluster": "facegate-db", "cnpg.io/instanceRole": "primary"}),
    "other-pod": ("facegate", {"app.kubernetes.io/name": "debug"}),
    "ingress": ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "cnpg-operator": ("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}),
    "monitoring": ("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "elsewhere": ("default", {"app": "x"}),
}
LISTENS = {"gateway": 8000, "embedder": 8001, "matcher": 8002, "redis": 6379, "postgres": 5432}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {
            "In": present and value in e.get("values", []),
            "NotIn": not present or value not in e.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[e["operator"]]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], party: str, policy_ns: str) -> bool:
    ns, labels = PARTIES[party]
    assert "ipBlock" not in peer, "ipBlock is not modelled here"
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": ns}):
            return False
    elif ns != policy_ns:
        return False
    return _selects(peer.get("podSelector", {}), labels)


def _allowed(policies: list[dict[str, Any]], direction: str, subject: str, peer: str, port: int) -> bool:
    ns, labels = PARTIES[subject]
    field, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == ns
        and direction in p["spec"]["policyTypes"]
        and _selects(p["spec"]["podSelector"], labels)
    ]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get(field, []):
            ports = rule.get("ports")
            if ports and not any(x.get("protocol", "TCP") == "TCP" and x.get("port") == port for x in ports):
                continue
            if peers not in rule or any(_peer_matches(x, peer, ns) for x in rule[peers]):
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_intended_paths(overlay: str) -> None:
    policies = objects(overlay, "NetworkPolicy")
    reachable = {
        (src, dst)
        for dst, port in LISTENS.items()
        for src in PARTIES
        if src != dst or dst == "postgres"
        if _allowed(policies, "Egress", src, dst, port) and _allowed(policies, "Ingress", dst, src, port)
    }
    expected = {
        ("ingress", "gateway"),
        ("gateway", "embedder"),
        ("gateway", "matcher"),
        ("gateway", "redis"),
        ("gateway", "postgres"),
        ("matcher", "postgres"),
        ("migrate", "postgres"),
        ("postgres", "postgres"),  # streaming replication between the instances
        ("cnpg-operator", "postgres"),
    }
    if overlay == "gpu":
        expected.add(("monitoring", "embedder"))  # the HPA's metric is scraped from the embedder
    assert reachable == expected
    # nothing of ours reaches anything outside but DNS
    for src in ("gateway", "embedder", "matcher", "migrate", "redis"):
        assert not _allowed(policies, "Egress", src, "elsewhere", 443)
