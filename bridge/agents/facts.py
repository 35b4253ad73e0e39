"""Facts a call established, read from its transcript when it ends (into ``record.facts``).

An extractor looks at what the agent said; the first fact kind is the reservation
confirmation number the concierge reads back ("H-7-K-M-3-X").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .seed.concierge import extract_confirmation_number

__all__ = ["EXTRACTORS", "FactExtractor", "extract_facts"]

FactExtractor = Callable[[str], str | None]
"""Reads one fact out of the agent's words, or None."""

EXTRACTORS: dict[str, FactExtractor] = {
    "confirmation_number": extract_confirmation_number,
}
"""Fact name → extractor; deployments may add their own."""


def extract_facts(transcript: Iterable[Mapping[str, object]]) -> dict[str, str]:
    """Every fact found in what the agent said during the call."""
    said = "\n".join(
        str(line.get("text", "")) for line in transcript if line.get("role") == "agent"
    )
    if not said:
        return {}
    facts: dict[str, str] = {}
    for name, extractor in EXTRACTORS.items():
        value = extractor(said)
        if value is not None:
            facts[name] = value
    return facts
