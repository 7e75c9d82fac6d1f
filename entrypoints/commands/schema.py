"""``pipeline schema``: the event contract as JSON Schema, for producers' and consumers' own tooling."""

from __future__ import annotations

import argparse

from entrypoints.config import Settings
from entrypoints.container import build_container


def run(args: argparse.Namespace, settings: Settings) -> int:
    print(build_container(settings).json_schema(processed=args.processed))
    return 0
