"""The seed agents' files: valid YAML naming only tools that exist (full checks: the registry)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

import bridge.agents.seed
from bridge.agents.seed import SEED_AGENTS

AGENTS_DIR = Path(__file__).resolve().parent.parent / "config" / "agents"
KEYS = {
    "name",
    "description",
    "instructions",
    "voice",
    "greeting",
    "tools",
    "handoffs",
    "numbers",
    "default",
}


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((AGENTS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", sorted(SEED_AGENTS))
def test_agent_file_parses(name: str) -> None:
    agent = load(name)
    assert agent["name"] == name
    assert set(agent) <= KEYS
    for key in ("description", "instructions", "voice", "greeting"):
        assert isinstance(agent[key], str) and agent[key].strip(), key
    assert all(isinstance(number, str) and number.startswith("+") for number in agent["numbers"])
    assert isinstance(agent["default"], bool)
    assert "transfer_to_human" in agent["instructions"]


@pytest.mark.parametrize("name", sorted(SEED_AGENTS))
def test_agent_tools_exist(name: str) -> None:
    agent = load(name)
    assert agent["tools"]
    for reference in agent["tools"]:
        module_name, _, attribute = reference.partition(":")
        assert module_name == SEED_AGENTS[name], reference
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
        assert inspect.iscoroutinefunction(function), reference
        assert attribute in module.__all__, reference
        assert inspect.getdoc(function), reference
        assert not attribute.startswith("transfer_to_")  # the adapter makes those


@pytest.mark.parametrize("name", sorted(SEED_AGENTS))
def test_handoffs_name_seed_agents_and_are_mentioned(name: str) -> None:
    agent = load(name)
    for target in agent["handoffs"]:
        assert (AGENTS_DIR / f"{target}.yaml").exists(), target
        assert f"transfer_to_{target}" in agent["instructions"], target


def test_one_seed_agent_is_the_default_and_numbers_are_unique() -> None:
    agents = [load(name) for name in SEED_AGENTS]
    assert [agent["name"] for agent in agents if agent["default"]] == ["concierge"]
    numbers = [number for agent in agents for number in agent["numbers"]]
    assert len(numbers) == len(set(numbers))


def test_the_package_names_each_seed_module() -> None:
    assert bridge.agents.seed.__all__ == ["SEED_AGENTS"]
    for module_name in SEED_AGENTS.values():
        assert importlib.import_module(module_name).__name__ == module_name
