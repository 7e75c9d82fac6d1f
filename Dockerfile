# The user-login pipeline as a container image.
#
#   docker build -t user-login-pipeline:local .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 user-login-pipeline:local          # pipeline run
#   docker run --rm user-login-pipeline:local produce --forever --rate 50                      # data generator
#   docker run --rm user-login-pipeline:local topics ensure                                    # create topics
#
# Stage 1 builds a wheel of the project and of every runtime dependency; stage 2
# installs those wheels, offline, into a virtual environment on a slim base, so
# the image holds no compiler, no build tool, no dev extra and no source tree.
#
# No `# syntax=` line: the engine's built-in Dockerfile frontend (which has RUN --mount) is used,
# so a build never fetches a frontend image and works without a registry.
#
# BASE_IMAGE: any Debian-like image with python, venv and pip (default: the official slim Python).
# Without a registry, scripts/docker-local makes a local Debian base and passes it here.

ARG PYTHON_VERSION=3.12
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

# ------------------------------------------------------------------ builder
FROM ${BASE_IMAGE} AS builder

# Where pip finds packages, for builds behind a mirror or a proxy (unset: the default index).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Only what the wheel is built from (see .dockerignore): metadata first, then the packages.
COPY pyproject.toml README.md ./
COPY domain/ domain/
COPY application/ application/
COPY adapters/ adapters/
COPY entrypoints/ entrypoints/

# `pip wheel .` resolves [project.dependencies] only (never the dev extra). Every runtime
# dependency ships manylinux wheels, so nothing is compiled here.
RUN pip wheel --wheel-dir /wheels .

# ------------------------------------------------------------------ runtime
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="user-login-pipeline" \
      org.opencontainers.image.description="Validates, transforms and routes user-login events between Kafka topics" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A fixed, non-root UID/GID: Kubernetes' runAsUser (k8s/deployment.yaml) uses the same number.
RUN groupadd --system --gid 10001 pipeline \
    && useradd --system --uid 10001 --gid pipeline --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin pipeline

# Install from the builder's wheels only (--no-index: nothing else is fetched); the wheels
# are bind-mounted, so they never become a layer of this image. Byte code is compiled
# now, as root, so the service never needs to write to its (read-only) file system.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links=/wheels user-login-pipeline \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/pipeline --help > /dev/null

# An empty, root-owned working directory: `pipeline` reads ./.env when present, and none is baked in.
WORKDIR /app

USER 10001:10001

# /metrics, /healthz and /readyz (METRICS_PORT).
EXPOSE 9108

# slim has no curl: ask the service's own liveness endpoint with the standard library.
# A non-2xx answer raises, and so does a refused connection: both exit non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('METRICS_PORT') or '9108'; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).close()"]

# `pipeline run` finishes in-flight records on SIGTERM within SHUTDOWN_TIMEOUT seconds.
STOPSIGNAL SIGTERM

ENTRYPOINT ["pipeline"]
CMD ["run"]
