"""App versions compared as numbers, component by component.

The Go consumer this service replaces compared version strings, so "10.0.0"
sorted below "2.9.9"; comparing integer tuples fixes that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_COMPONENTS = 4
_VERSION_PATTERN = re.compile(rf"[0-9]+(?:\.[0-9]+){{0,{MAX_COMPONENTS - 1}}}")


@dataclass(frozen=True, order=True, slots=True)
class AppVersion:
    """1 to 4 dot-separated non-negative integers; missing components count as 0."""

    components: tuple[int, int, int, int]

    @classmethod
    def parse(cls, text: str) -> AppVersion:
        """Raise ValueError unless ``text`` is e.g. ``2``, ``2.10`` or ``10.0.0.1``."""
        if _VERSION_PATTERN.fullmatch(text) is None:
            raise ValueError(f"not a version: {text!r}")
        numbers = [int(part) for part in text.split(".")]
        numbers.extend([0] * (MAX_COMPONENTS - len(numbers)))
        return cls((numbers[0], numbers[1], numbers[2], numbers[3]))

    def __str__(self) -> str:
        shown = list(self.components)
        while len(shown) > 1 and shown[-1] == 0:
            shown.pop()
        if len(shown) < 3:
            shown.extend([0] * (3 - len(shown)))
        return ".".join(str(part) for part in shown)
