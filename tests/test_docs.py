"""The README's configuration table lists every setting each service reads, so the docs cannot drift."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize(
    "module, name",
    [
        ("services.embedder.settings", "EmbedderSettings"),
        ("services.matcher.settings", "MatcherSettings"),
        ("services.gateway.settings", "GatewaySettings"),
    ],
)
def test_every_setting_is_in_the_readme(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    prefix = cls.model_config["env_prefix"]
    missing = [f"{prefix}{f.upper()}" for f in cls.model_fields if f"`{prefix}{f.upper()}`" not in README]
    assert not missing, f"README configuration table lacks {missing}"


def test_readme_starts_with_the_two_commands() -> None:
    head = README.split("\n## ", 1)[0]
    assert "make run" in head and "make test" in head
    assert "make test" in (Path(__file__).resolve().parents[1] / ".ci/run").read_text()
