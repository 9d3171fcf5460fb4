"""Docker cannot run on the development machines, so this keeps deploy/ in step with the code instead:
every service, port, env var, build argument and health check in the compose file must match what the
services actually read and serve."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.stack import SERVICES

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "deploy/docker-compose.yml").read_text())
GPU = yaml.safe_load((REPO / "deploy/docker-compose.gpu.yml").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETTINGS = {
    "embedder": ("services.embedder.settings", "EmbedderSettings"),
    "matcher": ("services.matcher.settings", "MatcherSettings"),
    "gateway": ("services.gateway.settings", "GatewaySettings"),
}


def settings_fields(service: str) -> tuple[str, set[str]]:
    module, name = SETTINGS[service]
    cls: Any = getattr(importlib.import_module(module), name)
    return cls.model_config["env_prefix"], {f.upper() for f in cls.model_fields}


def test_compose_has_the_stack() -> None:
    assert set(COMPOSE["services"]) == {"postgres", "redis", "migrate", "embedder", "matcher", "gateway"}
    assert COMPOSE["services"]["postgres"]["image"].startswith("pgvector/pgvector:pg16")
    assert COMPOSE["services"]["redis"]["image"] == "redis:7"
    assert COMPOSE["services"]["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert "FACEGATE_DATABASE_URL" in COMPOSE["services"]["migrate"]["environment"]


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_service_port_build_and_health_match_the_code(spec: Any) -> None:
    svc = COMPOSE["services"][spec.name]
    assert svc["build"]["args"]["SERVICE"] == spec.name
    assert spec.name in PYPROJECT["project"]["optional-dependencies"], "the Dockerfile installs .[SERVICE]"
    assert importlib.util.find_spec(f"services.{spec.name}.app") is not None
    assert svc["environment"]["PORT"] == str(spec.port)
    # only the public surface publishes a port; the internal services are reached over the internal network
    assert svc.get("ports") == ([f"{spec.port}:{spec.port}"] if spec.name == "gateway" else None)
    assert svc["healthcheck"]["test"][-1] == f"http://localhost:{spec.port}/readyz"


def test_only_the_gateway_is_reachable_from_outside() -> None:
    published = {name for name, svc in COMPOSE["services"].items() if svc.get("ports") or svc.get("network_mode")}
    assert published == {"gateway"}
    assert COMPOSE["networks"]["internal"]["internal"] is True
    for name, svc in COMPOSE["services"].items():
        assert "internal" in svc["networks"], name
        assert ("public" in svc["networks"]) == (name == "gateway"), name


SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "FACEGATE_EMBEDDER_INTERNAL_TOKEN", "FACEGATE_MATCHER_INTERNAL_TOKEN")


def test_secrets_come_from_the_environment_with_no_default() -> None:
    text = (REPO / "deploy/docker-compose.yml").read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is not used"
        # `${X:?msg}` makes compose refuse to start without it; `${X:-default}` or `${X}` would run with a
        # known or empty secret
        assert all(u.startswith(":?") for u in uses), (name, uses)
    pg = COMPOSE["services"]["postgres"]["environment"]
    assert pg["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "${REDIS_PASSWORD:?" in COMPOSE["services"]["gateway"]["environment"]["FACEGATE_GATEWAY_REDIS_URL"]
    redis = COMPOSE["services"]["redis"]
    assert "requirepass" in " ".join(redis["command"]) and "umask 077" in " ".join(redis["command"])


def test_redis_persists_nothing() -> None:
    """Redis caches face templates: no RDB snapshot or append-only file may keep an erased attendee's vectors."""
    redis = COMPOSE["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--save ''" in command and "--appendonly no" in command, command
    assert "volumes" not in redis and "redisdata" not in COMPOSE.get("volumes", {})


def test_each_service_holds_only_its_own_internal_token() -> None:
    env = {name: COMPOSE["services"][name]["environment"] for name in ("embedder", "matcher", "gateway")}
    emb, mat = "${FACEGATE_EMBEDDER_INTERNAL_TOKEN:?", "${FACEGATE_MATCHER_INTERNAL_TOKEN:?"
    assert env["embedder"]["FACEGATE_EMBEDDER_INTERNAL_TOKEN"].startswith(emb)
    assert env["matcher"]["FACEGATE_MATCHER_INTERNAL_TOKEN"].startswith(mat)
    assert env["gateway"]["FACEGATE_GATEWAY_EMBEDDER_TOKEN"].startswith(emb)
    assert env["gateway"]["FACEGATE_GATEWAY_MATCHER_TOKEN"].startswith(mat)
    # the embedder parses hostile images: it must hold nothing that opens the matcher (and vice versa)
    assert not any(mat in str(v) for v in env["embedder"].values())
    assert not any(emb in str(v) for v in env["matcher"].values())


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_env_var_is_a_setting(service: str) -> None:
    prefix, fields = settings_fields(service)
    env = COMPOSE["services"][service].get("environment", {})
    ours = [k for k in env if k.startswith("FACEGATE_")]
    for key in ours:
        assert key.startswith(prefix), f"{key} is not read by the {service}"
        assert key[len(prefix) :] in fields, f"{key} is not a field of the {service}'s settings"


def test_required_settings_are_given() -> None:
    for service in ("matcher", "gateway"):
        prefix, _ = settings_fields(service)
        assert f"{prefix}DATABASE_URL" in COMPOSE["services"][service]["environment"]
    # without their credentials the services refuse to start (services/common/internal_auth.py)
    assert "FACEGATE_EMBEDDER_INTERNAL_TOKEN" in COMPOSE["services"]["embedder"]["environment"]
    assert "FACEGATE_MATCHER_INTERNAL_TOKEN" in COMPOSE["services"]["matcher"]["environment"]


def test_gateway_points_at_the_compose_services() -> None:
    env = COMPOSE["services"]["gateway"]["environment"]
    ports = {s.name: s.port for s in SERVICES}
    assert env["FACEGATE_GATEWAY_EMBEDDER_URL"] == f"http://embedder:{ports['embedder']}"
    assert env["FACEGATE_GATEWAY_MATCHER_URL"] == f"http://matcher:{ports['matcher']}"
    assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379/0", env["FACEGATE_GATEWAY_REDIS_URL"])
    needs = COMPOSE["services"]["gateway"]["depends_on"]
    assert needs["migrate"]["condition"] == "service_completed_successfully"
    assert all(needs[s]["condition"] == "service_healthy" for s in ("redis", "embedder", "matcher"))


def test_dockerfile_runs_the_app_factory_and_gpu_override_swaps_tensorflow() -> None:
    dockerfile = (REPO / "deploy/service.Dockerfile").read_text()
    assert "services.${SERVICE}.app:create_app --factory" in dockerfile
    pinned = next(d for d in PYPROJECT["project"]["optional-dependencies"]["embedder"] if d.startswith("tensorflow"))
    assert f"TF_PACKAGE={pinned}" in dockerfile, "the CPU default must be the version pyproject pins"
    gpu_tf = GPU["services"]["embedder"]["build"]["args"]["TF_PACKAGE"]
    assert re.fullmatch(r"tensorflow\[and-cuda\]==" + re.escape(pinned.split("==")[1]), gpu_tf)
    assert GPU["services"]["embedder"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
