"""``pipeline run``: the long-running service, as one process or a small supervisor of N workers."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from dependency_injector import providers

from application.errors import BrokerUnavailable, FatalBrokerError, InvalidConfiguration, NotAuthorized
from entrypoints.commands.topics import ensure_topics, message_limits, producer_limit, report
from entrypoints.config import Settings
from entrypoints.container import TRACING_FLUSH_TIMEOUT_S, Container, build_container
from entrypoints.errors import EnvironmentProblem
from entrypoints.heap import prepare_for_record_loop
from entrypoints.signals import GracefulStop

log = logging.getLogger(__name__)

_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
EXIT_CONFIGURATION = 2
EXIT_NOT_AUTHORIZED = 3  # an operator must grant an ACL: restarting cannot help
# A worker that exits so is not restarted: it would only fail the same way again.
_FINAL_STATUSES = (0, EXIT_CONFIGURATION, EXIT_NOT_AUTHORIZED)


@dataclass(frozen=True, slots=True)
class RunOptions:
    max_messages: int | None
    idle_timeout_s: float | None
    ensure_topics: bool


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.enable_auto_commit:
        log.warning("ENABLE_AUTO_COMMIT=true ignored: offsets are committed only after output or DLQ delivery")
    options = RunOptions(args.max_messages, args.idle_timeout, args.ensure_topics)
    if settings.workers > 1:
        return supervise(settings, options)
    return serve(settings, options, GracefulStop().install())


def serve(settings: Settings, options: RunOptions, stop: GracefulStop) -> int:
    """One consumer-group member until stopped; exit status 0 after a clean stop."""
    container = build_container(settings)
    if settings.broker_client != "memory":
        container.tls_check()  # a bad key or CA file: exit 2 before anything starts
    tracer = container.tracer()  # a bad OTEL_* value: exit 2 before anything starts, too
    if settings.metrics_port:
        _start_operations_server(container, settings)
    try:
        admin = container.admin()
        try:
            if options.ensure_topics:
                report(ensure_topics(admin, settings, stop.event))
            limits = message_limits(admin, settings)
        finally:
            admin.close()
        apply_message_limits(container, settings, limits)
        pipeline = container.pipeline()
        log.info(
            "starting: %s -> %s / %s, group %s, client %s, %s",
            settings.input_topic, settings.output_topic, settings.dlq_topic,
            settings.consumer_group, settings.broker_client, settings.processing_guarantee,
        )  # fmt: skip
        prepare_for_record_loop()
        pipeline.run(stop.event, max_messages=options.max_messages, idle_timeout_s=options.idle_timeout_s)
    except NotAuthorized as error:
        log.error("%s; exiting (status %d)", error, EXIT_NOT_AUTHORIZED)
        return EXIT_NOT_AUTHORIZED
    except BrokerUnavailable as error:
        if not stop.event.is_set():
            raise
        # Stopped while still waiting for the cluster at start (--ensure-topics): nothing was consumed.
        log.info("stopped while waiting for the cluster (%s)", error.summary())
    except FatalBrokerError as error:
        log.error("fatal broker error, exiting so a restart can take over (nothing uncommitted is lost): %s", error)
        return 1
    finally:
        if settings.metrics_port:
            container.operations_server().stop()
        tracer.shutdown(TRACING_FLUSH_TIMEOUT_S)
    return 0


def _start_operations_server(container: Container, settings: Settings) -> None:
    try:
        server = container.operations_server()  # binds the port
    except OSError as error:
        setting = (
            "METRICS_PORT" if settings.worker_index == 0 else f"METRICS_PORT + worker index {settings.worker_index}"
        )
        raise EnvironmentProblem(
            f"cannot serve /metrics, /healthz and /readyz on port {settings.metrics_port} ({setting}): "
            f"{error.strerror}; free the port, or choose another with METRICS_PORT (0 disables)"
        ) from None
    server.start()


def apply_message_limits(container: Container, settings: Settings, limits: dict[str, int]) -> None:
    """The producers let through anything the input topic holds; the pipeline knows both topics' limits."""
    input_limit = limits.get(settings.input_topic)
    if input_limit is not None:
        container.message_limit.override(providers.Object(producer_limit(input_limit)))
    pipeline_settings = dataclasses.replace(
        settings.pipeline_settings(),
        input_max_message_bytes=input_limit,
        dlq_max_message_bytes=limits.get(settings.dlq_topic),
    )
    container.pipeline_settings.override(providers.Object(pipeline_settings))


def _worker(settings: Settings, options: RunOptions) -> None:
    """Entry point of one spawned worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the whole group; the parent decides
    build_container(settings).logging_setup(context={"worker": settings.worker_index})
    stop = GracefulStop().install((signal.SIGTERM,))
    try:
        sys.exit(serve(settings, options, stop))
    except InvalidConfiguration as error:
        log.error("configuration error: %s", error)
        sys.exit(EXIT_CONFIGURATION)
    except EnvironmentProblem as error:
        log.error("%s", error)
        sys.exit(1)


def supervise(settings: Settings, options: RunOptions) -> int:
    """Run ``WORKERS`` members of the same group as processes, forwarding signals and restarting crashes.

    Each worker serves its own metrics on METRICS_PORT + its index.
    """
    context = multiprocessing.get_context("spawn")
    count = settings.workers
    stopping = False
    forced = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping, forced
        if stopping:
            forced = True
            for process in workers.values():
                if process.is_alive():
                    process.kill()
            return
        stopping = True
        log.info("%s: stopping %d worker(s)", signal.Signals(signum).name, count)
        for process in workers.values():
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: each worker drains, commits and leaves the group

    def stop_all() -> None:
        nonlocal stopping
        stopping = True
        for process in workers.values():
            if process.is_alive() and process.pid is not None:
                process.terminate()

    def start(index: int) -> BaseProcess:
        worker_settings = settings.for_worker(index)
        if settings.metrics_port:
            worker_settings = dataclasses.replace(worker_settings, metrics_port=settings.metrics_port + index)
        process = context.Process(target=_worker, args=(worker_settings, options), name=f"worker-{index}")
        process.start()
        return process

    workers: dict[int, BaseProcess] = {}
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for index in range(count):
        workers[index] = start(index)
    log.info("started %d workers in group %s", count, settings.consumer_group)
    restarts = dict.fromkeys(workers, 0)
    statuses: dict[int, int] = {}
    while len(statuses) < count:
        time.sleep(0.2)
        for index, process in workers.items():
            if index in statuses or process.is_alive():
                continue
            code = process.exitcode if process.exitcode is not None else 1
            if code in _FINAL_STATUSES or stopping:
                statuses[index] = code
                if code == EXIT_NOT_AUTHORIZED and not stopping:
                    log.error("worker %d is not authorized (see its error above): stopping the others", index)
                    stop_all()
                continue
            delay = _RESTART_BACKOFF_S[min(restarts[index], len(_RESTART_BACKOFF_S) - 1)]
            log.warning("worker %d exited with %d; restarting in %.0fs", index, code, delay)
            restarts[index] += 1
            time.sleep(delay)
            if not stopping:
                workers[index] = start(index)
    if forced:
        return 130
    return max(statuses.values(), default=0)
