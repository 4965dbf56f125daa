# The overnight agent in a container; it drives the host's Docker engine through its socket.
#
#   docker build --build-arg BASE_IMAGE=overnight-base:bookworm -t overnight-agent .
#   docker run -d --name overnight-agent \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/overnight:/var/lib/overnight \
#     -e OVERNIGHT_REDIS_URL=redis://queue-host:6379/0 \
#     overnight-agent agent daemon --queue gpu --env-mode docker --name gpu-box-1
#
# The engine mounts task workspaces by their host path, so /var/lib/overnight must be mounted at
# the same path inside and outside. BASE_IMAGE needs python3 (with venv and pip) and git; a
# local one (see .ci/base-image) builds without any registry. Behind an inspecting TLS proxy,
# put its CA bundle in the build context as ca-bundle.crt: only the build stage sees it.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# the bracket makes the CA bundle optional: the pattern may match nothing
COPY pyproject.toml README.md ca-bundle.cr[t] /src/
COPY overnight /src/overnight
RUN set -eu; \
    if [ -f /src/ca-bundle.crt ]; then \
      export PIP_CERT=/src/ca-bundle.crt SSL_CERT_FILE=/src/ca-bundle.crt; \
    fi; \
    python3 -m venv /opt/overnight; \
    /opt/overnight/bin/pip install --no-cache-dir --disable-pip-version-check --progress-bar off /src

FROM ${BASE_IMAGE}
RUN command -v git >/dev/null || { apt-get update -q && \
    apt-get install -y -q --no-install-recommends git && rm -rf /var/lib/apt/lists/*; }
COPY --from=build /opt/overnight /opt/overnight
ENV PATH=/opt/overnight/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    OVERNIGHT_ENV_MODE=docker \
    OVERNIGHT_WORKSPACE_DIR=/var/lib/overnight/workspaces \
    OVERNIGHT_CACHE_DIR=/var/lib/overnight/envs \
    OVERNIGHT_SPILL_DIR=/var/lib/overnight/spill
LABEL org.opencontainers.image.title="overnight agent"
ENTRYPOINT ["overnight"]
CMD ["agent", "daemon", "--help"]
