from __future__ import annotations

from bridge.agents.facts import extract_facts


def test_the_confirmation_number_the_agent_read_back_is_a_fact() -> None:
    transcript = [
        {"role": "caller", "text": "Table for two at eight, please. My code is ABC123."},
        {"role": "agent", "text": "You're booked. Your confirmation number is H-7-K-M-3-X."},
        {"role": "system", "event": "transferred", "text": "sip:human@pbx"},
    ]
    assert extract_facts(transcript) == {"confirmation_number": "H7KM3X"}


def test_no_agent_words_no_facts() -> None:
    assert extract_facts([{"role": "caller", "text": "H7KM3X"}]) == {}
    assert extract_facts([{"role": "agent", "text": "How can I help you today?"}]) == {}
