"""The ``pipeline`` command line.

Exit statuses: 0 success, 1 a runtime failure (the cluster unreachable, or still
unusable when a one-shot command gives up; an environment problem such as a
port in use, a full disk or an unreadable file), 2 a usage or configuration
mistake, 3 the cluster refuses this principal an operation (no ACL), 130
interrupted, 141 output pipe closed. Every failure is one line on stderr naming
the cause, never a traceback: ``_report`` below is the one place that maps
errors to that line and status.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Sequence

from application.errors import BrokerUnavailable, FatalBrokerError, InvalidConfiguration, NotAuthorized
from entrypoints.commands import config as config_command
from entrypoints.commands import demo, dlq, process, produce, schema, service, topics
from entrypoints.config import ConfigError, Settings, load_settings
from entrypoints.container import build_container
from entrypoints.errors import EnvironmentProblem, UsageError

log = logging.getLogger("pipeline")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13  # as if killed by SIGPIPE, like other Unix tools in a pipeline


def version() -> str:
    try:
        return importlib.metadata.version("user-login-pipeline")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _ratio(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("configuration (overrides environment and .env)")
    group.add_argument("--env-file", metavar="PATH", help="read settings from this file instead of ./.env")
    group.add_argument(
        "-c", "--set", dest="overrides", metavar="NAME=VALUE", type=_key_value, action="append", default=[],
        help="any setting (e.g. RETRY_LIMIT=3) or KAFKA_* client property; repeatable",
    )  # fmt: skip
    group.add_argument("--broker-client", choices=("memory", "confluent", "kafka-python"))
    group.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]")
    group.add_argument("--log-level", choices=("trace", "debug", "info", "warning", "error", "critical"))
    group.add_argument("--log-format", choices=("text", "json"))
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Validate, transform and route user-login events between Kafka topics.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the service")
    run.add_argument(
        "--max-messages", type=_positive_int, metavar="N", help="stop once N records are done and committed"
    )
    run.add_argument(
        "--idle-timeout",
        type=_non_negative_float,
        metavar="SECONDS",
        help="stop after this long with no new record, once the group is settled (an outage, a rebalance, "
        "a dead member's partitions, or partitions not readable yet, do not count)",
    )
    run.add_argument("--ensure-topics", action="store_true", help="create missing topics at start")
    run.add_argument(
        "--workers", type=_positive_int, metavar="N", help="consumer processes in this group (default: WORKERS or 1)"
    )

    demo = commands.add_parser(
        "demo", parents=[common], help="run the pipeline over generated records on the embedded broker"
    )
    demo.add_argument(
        "--count", type=_positive_int, default=100_000, metavar="N", help="records to generate (default 100000)"
    )
    demo.add_argument(
        "--seed", type=int, default=42, metavar="S", help="generator seed; same seed, same records (default 42)"
    )
    demo.add_argument("--json", action="store_true", help="print exactly one JSON object")

    process = commands.add_parser("process", parents=[common], help="process a JSON-lines file offline")
    process.add_argument("input", metavar="INPUT", help="JSON-lines file, one record value per line ('-' for stdin)")
    process.add_argument("--out", required=True, metavar="OUT", help="processed records, one per line")
    process.add_argument("--dlq", required=True, metavar="DLQ", help="rejected lines as JSON objects")

    produce = commands.add_parser("produce", parents=[common], help="publish generated user-login records")
    amount = produce.add_mutually_exclusive_group()
    amount.add_argument("--count", type=_positive_int, metavar="N", help="records to publish (default 10000)")
    amount.add_argument("--forever", action="store_true", help="publish until interrupted")
    produce.add_argument(
        "--rate", type=_non_negative_float, default=0.0, metavar="R", help="records per second; 0 = as fast as possible"
    )
    produce.add_argument(
        "--invalid-ratio", type=_ratio, default=0.1, metavar="F", help="share of defective records (0..1)"
    )
    produce.add_argument("--seed", type=int, metavar="S", help="make the run reproducible")
    produce.add_argument("--topic", metavar="T", help="target topic (default: INPUT_TOPIC)")

    topics = commands.add_parser("topics", help="manage the pipeline's topics")
    topics_commands = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topics_commands.add_parser("ensure", parents=[common], help="create the input, output and DLQ topics if missing")

    dlq = commands.add_parser("dlq", help="inspect and repair the dead-letter topic")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    inspect = dlq_commands.add_parser("inspect", parents=[common], help="counts by reason and the newest examples")
    inspect.add_argument("--limit", type=_positive_int, default=5, metavar="N", help="examples to show (default 5)")
    replay = dlq_commands.add_parser(
        "replay", parents=[common], help="re-publish dead letters, resuming where the last replay stopped"
    )
    replay.add_argument(
        "--reason", metavar="R", help="only records dead-lettered with this reason; this filter has its own position"
    )
    replay.add_argument("--to", metavar="TOPIC", help="target topic (default: INPUT_TOPIC)")
    replay.add_argument("--max", type=_positive_int, metavar="N", help="stop after re-publishing N records")
    replay.add_argument(
        "--from-beginning",
        action="store_true",
        help="forget the position of every replay filter first, and replay the whole DLQ again",
    )

    schema = commands.add_parser("schema", parents=[common], help="print the event contract as JSON Schema")
    schema.add_argument("--processed", action="store_true", help="the published event instead of the input")

    config = commands.add_parser(
        "config", parents=[common], help="show the effective settings and where each came from"
    )
    config.add_argument("--markdown", action="store_true", help="print the documentation table of all settings instead")
    return parser  # fmt: skip


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {}
    for key in ("broker_client", "bootstrap_servers", "log_level", "log_format", "workers"):
        value = getattr(args, key, None)
        if value is not None:  # a flag wins over -c and the environment
            flags[key] = str(value)
    return load_settings(dict(args.overrides or []), env_file=args.env_file, flags=flags)


def _report(error: BaseException) -> int:
    """The one line and the exit status for every failure a command may end with."""
    for kind, line, status in _REPORTS:
        if isinstance(error, kind):
            print(f"pipeline: {line(error)}", file=sys.stderr)
            return status
    raise error


def _said(prefix: str) -> Callable[[BaseException], str]:
    return lambda error: f"{prefix}{error}"


def _unavailable(error: BaseException) -> str:
    return error.summary() if isinstance(error, BrokerUnavailable) else str(error)


def _os_error(error: BaseException) -> str:
    return f"error: {describe_os_error(error) if isinstance(error, OSError) else error}"


# Failure class -> its line after "pipeline: " and the exit status; the first class that matches wins.
_REPORTS: tuple[tuple[type[BaseException], Callable[[BaseException], str], int], ...] = (
    (ConfigError, _said("configuration error: "), EXIT_USAGE),
    (UsageError, _said("error: "), EXIT_USAGE),
    (InvalidConfiguration, _said("error: "), EXIT_USAGE),
    (NotAuthorized, _said(""), service.EXIT_NOT_AUTHORIZED),
    (BrokerUnavailable, _unavailable, EXIT_FAILURE),
    (FatalBrokerError, _said("fatal broker error: "), EXIT_FAILURE),
    (EnvironmentProblem, _said("error: "), EXIT_FAILURE),
    (OSError, _os_error, EXIT_FAILURE),
)
_REPORTED = tuple(kind for kind, _, _ in _REPORTS)


def describe_os_error(error: OSError) -> str:
    """``/dev/full: No space left on device`` rather than ``[Errno 28] No space left on device: '/dev/full'``."""
    reason = error.strerror or str(error)
    if error.filename is not None:
        return f"{error.filename}: {reason}"
    return reason


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout has no descriptor (replaced by a test, say): nothing to flush
        pass
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, while it can still be handled
        return status
    except BrokenPipeError:  # `pipeline config | head -1`: the reader has all it wanted
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as error:
        return _report(error)
    log_level = settings.log_level
    if args.command in ("demo", "process") and settings.sources.get("log_level") == "default":
        log_level = "warning"  # these print their own summary; service chatter would bury it
    build_container(settings).logging_setup(level=log_level)
    for warning in settings.warnings:
        log.warning("%s", warning)

    handlers = {
        "run": service.run,
        "demo": demo.run,
        "process": process.run,
        "produce": produce.run,
        "dlq": dlq.run,
        "topics": topics.run,
        "schema": schema.run,
        "config": config_command.run,
    }
    try:
        return handlers[args.command](args, settings)
    except BrokenPipeError:
        raise  # handled in main(), quietly
    except _REPORTED as error:
        return _report(error)
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
