# LlamaController's control plane in one image: `llamacontroller operator`, `llamacontroller gateway`
# and the per-slot adapter all run from it. llama-server is not in it: the slot Pods run the official
# llama.cpp image (`image` in config/operator.yaml), so the package is installed without its `server`
# extra.
#
#   docker build -t REGISTRY/llamacontroller:0.1.0 .        (the repository is the context)
#
# tests/deploy/test_dockerfile.py checks this file (and runs hadolint on it).

# Builder: wheels for the package and every dependency. Nothing of this stage but the wheels is used.
FROM python:3.11.14-slim-bookworm AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime: the slim base, the wheels installed from the builder (mounted, not copied: no layer keeps
# them), no compiler, no package build tools, a non-root user.
FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="llamacontroller" \
      org.opencontainers.image.description="Kubernetes operator, gateway and adapter for llama.cpp's llama-server" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
    && pip uninstall --yes setuptools wheel \
    && groupadd --system --gid 10001 llamacontroller \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin llamacontroller
# The settings are built into the package (`docker run IMAGE render -f -` uses them); the Deployment
# passes --config with the ConfigMap built from config/operator.yaml.
WORKDIR /app
USER 10001:10001
# 8080: the operator's /healthz and /metrics; 11434: the gateway's and the adapter's API (and /metrics).
EXPOSE 8080 11434
ENTRYPOINT ["llamacontroller"]
CMD ["--help"]
