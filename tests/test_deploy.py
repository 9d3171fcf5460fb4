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
    assert svc["ports"] == [f"{spec.port}:{spec.port}"]
    assert svc["healthcheck"]["test"][-1] == f"http://localhost:{spec.port}/readyz"


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


def test_gateway_points_at_the_compose_services() -> None:
    env = COMPOSE["services"]["gateway"]["environment"]
    ports = {s.name: s.port for s in SERVICES}
    assert env["FACEGATE_GATEWAY_EMBEDDER_URL"] == f"http://embedder:{ports['embedder']}"
    assert env["FACEGATE_GATEWAY_MATCHER_URL"] == f"http://matcher:{ports['matcher']}"
    assert env["FACEGATE_GATEWAY_REDIS_URL"].startswith("redis://redis:6379")
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
