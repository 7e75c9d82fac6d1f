"""Parsing a setting's text: the spellings of true and false, and a choice among fixed words.

Shared by the settings table (entrypoints/config.py) and the kafka-python client properties
(adapters/kafka_python/config.py). Each parser raises ValueError with what it expected; the caller
names the variable.
"""

from __future__ import annotations

from collections.abc import Callable

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def choice(*allowed: str, normalise: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    """A parser accepting one of ``allowed`` (compared after ``normalise``, which settings are lower case)."""

    def parse(text: str) -> str:
        value = normalise(text.strip())
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}; got {text!r}")
        return value

    return parse
