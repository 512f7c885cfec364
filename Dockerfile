# medserve container image. Three stages, all FROM ${BASE_IMAGE}:
#
#   builder      the `serve` extra (binary wheels only) and a wheel of `app/` installed into
#                /opt/venv. Nothing of this stage but /opt/venv and the models reaches the
#                runtime image.
#   integration  pytest, httpx and the image libraries in /opt/venv, dcmtk's storescu; runs
#                tests/integration against a running service (compose profile `test`, make
#                container-test), and its PACS test against Orthanc (profile `pacs`).
#   runtime      ${BASE_IMAGE} + /opt/venv + models/. The default target (last stage).
#
#   docker build -t medserve .
#   docker run --rm -p 127.0.0.1:8000:8000 --read-only --tmpfs /tmp \
#              -e MEDSERVE_API_KEYS=<key> medserve
#
# BASE_IMAGE is python:3.11-slim-bookworm from Docker Hub by default. Without a registry,
# deploy/make-base-image.sh makes a Debian 12 base with Debian's python3.11 from the local
# mirror (localhost/medserve-base:bookworm) and `--build-arg BASE_IMAGE=...` builds from it;
# nothing else differs (every stage calls `python3.11`, which both bases have, and uses a venv).
#
# PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST and PIP_CERT (a CA bundle path inside the
# base) may be passed as build args for a site's package mirror; they hold no secrets and stay
# out of the runtime image (build args of the builder stage only).
#
# Everything the service needs at run time is in the image; it writes nothing outside /tmp and
# the data volume (/var/lib/medserve), so it runs with a read-only root file system. See
# docs/deployment.md.

ARG BASE_IMAGE=python:3.11-slim-bookworm

############################################################################################
FROM ${BASE_IMAGE} AS builder

# A site's package index (optional, no secrets); unset = pip's defaults.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
RUN python3.11 -m venv /opt/venv

# The pinned `serve` dependencies first, read from pyproject.toml (one source of truth), as
# binary wheels only: no compiler is needed or installed. This layer changes only with
# pyproject.toml. The `train` extra (TensorFlow) and `dev` extra are never installed here.
COPY pyproject.toml ./
RUN python3.11 -c "import tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; print('\n'.join(extras['serve']))" > /tmp/requirements-serve.txt \
 && /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements-serve.txt

# The service itself, as a wheel (README.md is the package's readme; training/ is not copied,
# so the wheel holds `app` only). The test suites some wheels ship (numpy, nibabel, ...: about
# 28 MB) are removed: no test code in the image.
COPY README.md ./
COPY app ./app
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/venv/bin/pip install --no-deps /tmp/wheels/medserve-*.whl \
 && /opt/venv/bin/pip check \
 && find /opt/venv/lib/python3.11/site-packages -depth -type d -name tests -prune -exec rm -rf {} + \
 && /opt/venv/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/venv/lib \
 && rm -rf /tmp/wheels /tmp/requirements-serve.txt

# The demo models, made world-readable here so the runtime stage's COPY keeps the modes
# whatever the umask of the checkout was.
COPY models ./models
RUN chmod -R u=rwX,go=rX ./models

############################################################################################
FROM ${BASE_IMAGE} AS integration

# A site's package index (optional, no secrets); unset = pip's defaults.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}" \
    HOME=/tmp

WORKDIR /work
# dcmtk's storescu: tests/integration/test_pacs.py sends a study to Orthanc by C-STORE, as a
# modality does (Debian's package; its own layer, before the Python one).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dcmtk \
 && rm -rf /var/lib/apt/lists/*

# Only what the black-box suite imports, at the versions pinned in pyproject.toml:
# pytest and httpx (dev extra), numpy, pillow, pydicom, nibabel (serve extra). No TensorFlow.
COPY pyproject.toml ./
RUN python3.11 -m venv /opt/venv \
 && python3.11 -c "import re, tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; want = {'pytest', 'httpx', 'numpy', 'pillow', 'pydicom', 'nibabel'}; print('\n'.join(r for r in extras['serve'] + extras['dev'] if re.match('[A-Za-z0-9_.-]+', r)[0].lower() in want))" > /tmp/requirements-integration.txt \
 && /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements-integration.txt \
 && rm /tmp/requirements-integration.txt \
 && groupadd --gid 10001 medserve \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin medserve

COPY tests/__init__.py tests/__init__.py
COPY tests/integration tests/integration

USER 10001:10001
ENV MEDSERVE_URL=http://api:8000
CMD ["python", "-m", "pytest", "-p", "no:cacheprovider", "tests/integration", "-v"]

############################################################################################
FROM ${BASE_IMAGE} AS runtime

# A fixed, unprivileged uid/gid, so host-side file permissions (a mounted models/) can be set
# for it. No home directory; HOME points at the tmpfs.
# The data folder (/var/lib/medserve: the jobs database) is the one writable place besides /tmp:
# a VOLUME owned by the service user, so a container started with nothing mounted still gets a
# writable (anonymous) volume there; mount a named volume or a host folder owned by 10001 to
# keep it.
RUN groupadd --gid 10001 medserve \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin medserve \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/medserve

# HOST/PORT: where `medserve serve` listens (read by its CLI); the HEALTHCHECK reads PORT too,
#   so change the port with -e PORT=..., not with --port.
# MEDSERVE_DATA_DIR: the service's writable data folder (the VOLUME below).
# MEDSERVE_WORKERS: uvicorn worker processes (read by `medserve serve`).
# MEDSERVE_ORT_INTRA_OP_THREADS: onnxruntime threads per model session; 0 = one per core the
#   container may use. With several workers, set it to cores / workers.
# OPENBLAS_NUM_THREADS=1: NumPy's spinning BLAS threads would steal onnxruntime's cores
#   (app/__init__.py sets the same default).
# PYTHONDONTWRITEBYTECODE: the byte code was compiled in the builder (unchecked-hash .pyc, valid
#   whatever the file times); never write any at run time (the root file system is read-only).
ENV PATH="/opt/venv/bin:${PATH}" \
    ORT_DISABLE_TELEMETRY=1 \
    OPENBLAS_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    HOST=0.0.0.0 \
    PORT=8000 \
    MEDSERVE_MODEL_DIR=/app/models \
    MEDSERVE_DATA_DIR=/var/lib/medserve \
    MEDSERVE_WORKERS=1 \
    MEDSERVE_ORT_INTRA_OP_THREADS=0

COPY --from=builder /opt/venv /opt/venv
# Baked-in demo models (root-owned, read-only to the service). Mount a folder over
# /app/models (-v ./models:/app/models:ro) to serve others without rebuilding.
COPY --from=builder /src/models /app/models

# Labels last: a new revision relabels the image without invalidating the layers above.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="medserve" \
      org.opencontainers.image.description="REST inference service for medical images (FastAPI + ONNX Runtime). Demo models trained on synthetic data; not a medical device." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

WORKDIR /app
VOLUME ["/var/lib/medserve"]
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM

# Ready = every model loaded and passed its self-test, on the port the service was told ($PORT).
# urllib, not curl (not in slim); no proxy, whatever the environment says.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '8000'), timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# No ENTRYPOINT: `docker run IMAGE medserve serve ...` (or any other command) replaces this.
CMD ["medserve", "serve"]
