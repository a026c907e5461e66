# The agent's sandbox image: the agent program (python3 -m agent run), git, Node.js and the
# Claude Code CLI. Runs as `agent` (uid 1000); /work is its only writable folder besides /tmp
# (the runner mounts a volume there and makes the rest read-only).
#
#   scripts/build-images agent                      # FROM the local debootstrap base
#   docker build -f deploy/docker/agent.Dockerfile --build-arg BASE=debian:bookworm-slim .
ARG BASE=clarity-base:bookworm
FROM ${BASE}

# Pinned so that every build of one commit gets the same CLI.
ARG CLAUDE_CODE_VERSION=2.1.332

# HOME is the work volume: git's and Claude Code's own files live beside the checkout, the only
# place the sandbox can write that lasts through the run. (Few instructions on purpose: with the
# vfs storage driver, in CI, every one costs a full copy of the image.)
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PYTHONPATH=/opt/clarity \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/work \
    CLARITY_WORK_DIR=/work/repo \
    CLAUDE_CONFIG_DIR=/work/.claude \
    DISABLE_AUTOUPDATER=1

# One layer: apt lists and npm's cache never reach the image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 git ca-certificates nodejs npm \
    && npm install --global --no-audit --no-fund --omit=dev \
        "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
    && npm cache clean --force \
    && rm -rf /var/lib/apt/lists/* /work/.npm /root/.npm /tmp/* \
    && useradd --uid 1000 --user-group --home-dir /work --no-create-home --shell /bin/bash agent \
    && mkdir -p /work \
    && chown agent:agent /work

COPY agent/ /opt/clarity/agent/

USER 1000:1000
WORKDIR /work
CMD ["python3", "-m", "agent", "run"]
