# syntax=docker/dockerfile:1
# The `vallum controller` image: docker build -t ghcr.io/vallum-dev/vallum:0.1.0 .
#
# Two stages: `build` makes a virtual environment in /opt/vallum (dependencies first, in a layer
# of their own that is rebuilt only when pyproject.toml changes; then Vallum itself), and the
# final stage copies only that environment onto the same slim Python base: no pip cache, no
# sources, no build tools.
#
# Runs as UID/GID 10001 (numeric, so the kubelet can check runAsNonRoot) and with a read-only
# root filesystem: the only place written is $TMPDIR (/tmp: TLS material handed to OpenSSL,
# the workers' metrics and sessions directories). Give /tmp an emptyDir (manifests/deployment.yaml
# does: medium Memory) when the root filesystem is read-only.
#
# Not built by the unit tests (no Docker engine there): tests/test_dockerfile.py checks what can
# be checked by reading this file; the image itself is built and run by the kind workflow.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/vallum
WORKDIR /src

# 1. Dependencies only, read from pyproject.toml: the project's own and its `speed` (uvloop)
#    and `operator` (kopf, kubernetes) extras. Every wheel they need exists for CPython 3.11
#    on glibc x86_64 and aarch64, so no compiler is installed.
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + [d for e in ("speed", "operator") \
for d in p["optional-dependencies"][e]]))' > requirements.txt \
 && /opt/vallum/bin/pip install -r requirements.txt

# 2. Vallum itself (a wheel built from proxy/ and operator/), with nothing new to download but
#    the build backend. pip compiles the bytecode here, so nothing is written at run time.
COPY README.md ./
COPY proxy ./proxy
COPY operator ./operator
COPY crds ./crds
RUN /opt/vallum/bin/pip install --no-deps ".[speed,operator]" \
 && /opt/vallum/bin/vallum controller --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="vallum" \
      org.opencontainers.image.description="Zero-trust ingress controller for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/vallum/bin:$PATH \
    PYTHONSAFEPATH=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 vallum \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin vallum
COPY --from=build /opt/vallum /opt/vallum
USER 10001:10001
WORKDIR /tmp
# HTTPS, plain HTTP (redirects, HTTP-01 challenges), admin (/healthz, /readyz, /metrics):
# high ports, so no capability is needed to bind them; the Service maps 443 and 80.
EXPOSE 8443 8080 9090
ENTRYPOINT ["vallum", "controller"]
CMD ["--address=:8443", "--http-redirect-address=:8080", "--metrics-address=:9090"]
