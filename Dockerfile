# syntax=docker/dockerfile:1
#
# One image for every Gristmill process; the first argument picks it:
#
#   docker build -t gristmill .
#   docker run --rm -e GRISTMILL_REDIS_URL=redis://gristmill@redis:6379/0 \
#     -e GRISTMILL_REDIS_PASSWORD_FILE=/run/secrets/redis-password gristmill scheduler --metrics-port 9100
#   docker run --rm -it gristmill up        # whole fleet on the embedded Valkey, data in /var/lib/gristmill
#
# Add --init to `docker run` (Compose: `init: true`) so processes that job code orphans
# are reaped. No secrets are baked in: the Redis URL and password file come at run time.
#
# Who runs as whom: the image's default user is uid 10001 (the api and the scheduler run
# as that, under Pod Security "restricted"). A WORKER that sandboxes its jobs runs as root
# in its container with CAP_SYS_ADMIN (it unshares PID/mount namespaces, mounts /proc and a
# tmpfs per job) and runs the job itself as an unprivileged uid without capabilities;
# deploy/docker-compose.yml and deploy/k8s/worker-default.yaml set that up and say why.
#
# Reproducible: the base image is pinned by digest (python:3.11.11-slim-bookworm, the
# multi-arch index digest as published by Docker Hub; refresh both with
# `docker buildx imagetools inspect python:3.11.11-slim-bookworm`), and every Python
# package, the build backend included, is installed from a lock file with hashes.

# ---- builder: the locked dependencies, then the project's wheel, into a venv ----
FROM python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5 AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The venv gets no pip or setuptools of its own: the builder's pip installs into it.
RUN python -m venv --without-pip /opt/venv

WORKDIR /src
# Dependencies first, in a layer of their own: rebuilt only when the lock file changes.
COPY requirements.lock requirements-build.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-build.lock \
    && pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes --no-deps \
       -r requirements.lock

# Then the project itself (.dockerignore keeps everything else out of the context): a
# wheel built with the locked setuptools, installed without touching the dependencies.
# The last command is a smoke test.
COPY . .
RUN pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /tmp/wheels . \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /tmp/wheels/gristmill-*.whl \
    && /opt/venv/bin/gristmill --help > /dev/null

# ---- runtime: the venv, a non-root default user, nothing else ----
FROM python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

LABEL org.opencontainers.image.title="gristmill" \
      org.opencontainers.image.description="Redis-backed distributed job runner: worker, scheduler, api, up" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}" \
    GRISTMILL_DATA_DIR=/var/lib/gristmill \
    GRISTMILL_METRICS_ADDR=0.0.0.0

# No installer in the runtime image: the base's pip and setuptools go (the venv has none).
# bash runs bash jobs: it is an Essential package of Debian, so the slim base already has
# it and no apt-get layer is needed; fail the build loudly if that ever changes.
# UID/GID 10001: numeric, so Kubernetes' runAsNonRoot can verify it.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && bash --version > /dev/null \
    && groupadd --system --gid 10001 gristmill \
    && useradd --system --no-log-init --uid 10001 --gid gristmill \
       --home-dir /home/gristmill --create-home --shell /bin/bash gristmill \
    && install -d -o gristmill -g gristmill -m 0750 /var/lib/gristmill

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/gristmill

# The HTTP API and its /metrics (8000); metrics of the scheduler (9100) and of workers
# (9101, only with --metrics-port), as deploy/ uses them.
EXPOSE 8000 9100 9101

# No HEALTHCHECK: workers and schedulers serve no HTTP besides the optional /metrics;
# liveness is their heartbeat in Redis (gm:workers, gm:schedulers), watched by the scheduler.
# SIGTERM (the default stop signal) makes a worker stop taking jobs and finish the
# running ones within --grace seconds: give the container a longer stop timeout.
ENTRYPOINT ["gristmill"]
CMD ["worker"]
