"""``pipeline schema``: the event contract as JSON Schema, for producers' and consumers' own tooling."""

from __future__ import annotations

import argparse

from adapters.schema import render_json_schema
from entrypoints.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    print(render_json_schema(processed=args.processed, rules=settings.rule_settings()))
    return 0
