"""``pipeline config``: every effective setting and where it came from, secrets masked."""

from __future__ import annotations

import argparse

from entrypoints.config import SETTINGS, Settings, settings_table_markdown


def _shown(value: object) -> str:
    """A value as one writes it in the settings table and in ``.env``: ``true``, ``0``, ``30``, ``a,b``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return "off" if value is None else str(value)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.markdown:
        print(settings_table_markdown(), end="")
        return 0
    width = max(len(setting.name) for setting in SETTINGS)
    for setting in SETTINGS:
        origin = settings.origins.get(setting.key) or settings.sources.get(setting.key, "default")
        print(f"{setting.name:<{width}}  {_shown(getattr(settings, setting.key)):<28} ({origin})")
    for name, value in sorted(settings.client_properties.items()):
        masked = str(value)  # a Secret prints as ***
        origin = settings.origins.get(f"client:{name}", "")
        print(
            f"{'client: ' + name:<{width}}  {masked:<28} ({origin})"
            if origin
            else f"{'client: ' + name:<{width}}  {masked}"
        )
    return 0
