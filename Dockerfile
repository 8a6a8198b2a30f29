# One image for every service of the project (README.md lists them and their ports). Each
# compose service picks its process with `command: python -m services.<name>`; migrations run
# as `python -m shared.migrate`.
#
# PYTHON_IMAGE: any Debian-based CPython 3.11 image with the venv module. The default is the
# upstream image at an exact version; `make test-deploy` builds one from Debian's packages.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: resolve and build every wheel (the project and its pinned dependencies) ----------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python3 -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml ./
COPY services/ services/
COPY shared/ shared/

# Every dependency has a binary wheel for this platform or is pure Python (`wheel` in the venv
# first, for any that builds from an sdist): no compiler is needed. The build
# backend's wheels go along so the final stage installs `.` without any index. A TLS-inspecting
# proxy's CA may be given as the build secret `pip_ca`; it never lands in a layer.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && /opt/venv/bin/pip install "setuptools>=68" wheel \
    && /opt/venv/bin/pip wheel --wheel-dir /wheels . "setuptools>=68" wheel

# ---- final: the runtime image -------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin app \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/antrean \
    && python3 -m venv /opt/venv

# The only writable place for the service user: faust's state directory (by default faust would
# create `<app>-data` in the read-only /app). `{conf.name}` is expanded by faust.
ENV FAUST_DATADIR=/var/lib/antrean/{conf.name}-data \
    MIGRATIONS_DIR=/app/migrations

WORKDIR /app

COPY pyproject.toml ./
COPY services/ services/
COPY shared/ shared/
COPY migrations/ migrations/

# Install the project from the builder's wheels only (no network, no compiler in this stage).
# The sources stay in /app: `python -m` runs from here and shared.db finds /app/migrations.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels . \
    && rm -rf build ./*.egg-info

# Code and migrations are owned by root and read-only for the service user.
USER 10001:10001

# cancel API 8000, notifier 8001, BPJS sync worker (health/metrics) 6066, simulator (dev) 8090
EXPOSE 8000 8001 6066 8090

CMD ["python", "-m", "services.cancel_api"]
