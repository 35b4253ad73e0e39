"""Agent files: the model, the strict loader, and errors that name file, agent and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.agents.spec import (
    AgentConfigError,
    AgentSpec,
    agent_files,
    load_agent_file,
    parse_agents,
)

FRONT_DESK = """\
name: front_desk
description: Answers first and routes the caller.
instructions: |
  You are the front desk of ACME.
  Route the caller to the right desk.
voice: marin
greeting: ACME, how can I help?
tools: [acme.tools:lookup_customer, send_sms]
handoffs: [billing]
numbers: ["+15550100", "frontdesk"]
default: true
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_one_agent_per_file(tmp_path: Path) -> None:
    [agent] = load_agent_file(write(tmp_path, "front_desk.yaml", FRONT_DESK))
    assert agent == AgentSpec(
        name="front_desk",
        description="Answers first and routes the caller.",
        instructions="You are the front desk of ACME.\nRoute the caller to the right desk.",
        voice="marin",
        greeting="ACME, how can I help?",
        tools=["acme.tools:lookup_customer", "send_sms"],
        handoffs=["billing"],
        numbers=["+15550100", "frontdesk"],
        default=True,
    )


def test_a_list_of_agents_with_defaults(tmp_path: Path) -> None:
    text = "- name: a\n  instructions: Be A.\n- name: b\n  instructions: Be B.\n"
    first, second = load_agent_file(write(tmp_path, "two.yml", text))
    assert (first.name, second.name) == ("a", "b")
    assert second.tools == [] and second.handoffs == [] and second.numbers == []
    assert second.voice is None and second.greeting is None and not second.default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\ninstructions: x\ncolour: blue\n", "a.yaml (a): colour: Extra inputs"),
        ("name: a\n", "a.yaml (a): instructions: Field required"),
        ("name: a\ninstructions: '  '\n", "instructions: String should have at least 1"),
        ("name: a b\ninstructions: x\n", "name: String should match pattern"),
        ("name: a\ninstructions: x\ntools: lookup\n", "tools: Input should be a valid list"),
        ("name: a\ninstructions: x\ntools: ['os:']\n", "tools[0]: String should match pattern"),
        ("name: a\ninstructions: x\nhandoffs: [b c]\n", "handoffs[0]: String should match"),
        ("name: a\ninstructions: x\ndefault: maybe\n", "default: Input should be a valid bool"),
        ("name: a\ninstructions: x\nnumbers: [+15550100]\n", 'quoted string ("+15550100")'),
        ("name: a\ninstructions: x\nname: b\n", "found duplicate key 'name'"),
        ("name: a\ninstructions: [x\n", "not valid YAML"),
        ("", "the file declares no agent"),
        ("just text\n", "expected an agent (a mapping) or a list of agents, not str"),
    ],
)
def test_errors_name_file_agent_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "a.yaml", text)
    with pytest.raises(AgentConfigError) as raised:
        load_agent_file(path)
    message = str(raised.value)
    assert message.startswith(str(path))
    assert expected in message


def test_errors_in_a_list_name_the_entry(tmp_path: Path) -> None:
    text = "- name: a\n  instructions: x\n- name: b\n  voice: [x]\n  instructions: y\n"
    path = write(tmp_path, "many.yaml", text)
    with pytest.raises(AgentConfigError, match=r"many\.yaml: agents\[1\] \(b\): voice: Input"):
        load_agent_file(path)
    with pytest.raises(AgentConfigError, match=r"agents\[0\]: an agent must be a mapping"):
        parse_agents(["front_desk"], "inline")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="cannot read"):
        load_agent_file(tmp_path / "missing.yaml")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: a\ninstructions: caf\xe9\n")
    with pytest.raises(AgentConfigError, match="cannot read"):
        load_agent_file(path)


@pytest.mark.parametrize(
    ("dialled", "answers"),
    [
        ("+15550100", True),
        ("15550100", True),
        ("sip:+15550100@sipagent.example.com;user=phone", True),
        ("tel:+1-555-0100", True),
        ("sip:frontdesk@pbx", True),
        ("+15550101", False),
        ("", False),
    ],
)
def test_answers_a_number_in_any_form(dialled: str, answers: bool) -> None:
    agent = AgentSpec(name="a", instructions="x", numbers=["+1 555 0100", "frontdesk"])
    assert agent.answers(dialled) is answers


def test_agent_files_are_the_yaml_files(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yml", "README.md", ".hidden.yaml", "notes.txt"):
        write(tmp_path, name, "")
    (tmp_path / "dir.yaml").mkdir()
    assert [path.name for path in agent_files(tmp_path)] == ["a.yml", "b.yaml"]
    with pytest.raises(AgentConfigError, match="no such directory"):
        agent_files(tmp_path / "nowhere")


def test_the_shipped_example_is_valid() -> None:
    [agent] = load_agent_file(Path(__file__).parent.parent / "config/agents/echo_demo.yaml")
    assert agent.name == "echo_demo" and agent.answers("sip:echo@sipagent.example.com")
    assert not agent.default and not agent.tools
