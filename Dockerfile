# syntax=docker/dockerfile:1
# The drift service: `docker build -t ghcr.io/driftline/driftline:0.1.0 .`
# Stage 1 builds wheels of the project and every dependency; stage 2 installs only those
# wheels (no index, no compiler) and runs as uid 10001 on a read-only root filesystem.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY controller ./controller
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 driftline \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin driftline
# Versions are pinned by the wheels stage: with --no-index pip can install nothing but
# the wheels built there. Bytecode is compiled now, so nothing is written at run time.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels driftline
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# slim has no curl: probe /monitor/health with the standard library (exit 1 unless 2xx).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DRIFTLINE_PORT', '8080') + '/monitor/health', timeout=4)"]
# Exec form: the Python process is PID 1 and receives SIGTERM itself (graceful drain).
ENTRYPOINT ["driftline"]
CMD ["serve"]
