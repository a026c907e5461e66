# Clarity itself (the bot): `clarity serve`, `clarity worker`, `clarity db migrate`.
# Python dependencies come from requirements.lock with their hashes, then the project with
# --no-deps: the image holds exactly the locked versions.
#
#   scripts/build-images clarity                    # FROM the local debootstrap base
#   docker build -f deploy/docker/clarity.Dockerfile --build-arg BASE=debian:bookworm-slim .
#
# Few instructions on purpose: with the vfs storage driver (CI) every one costs a full copy.
ARG BASE=clarity-base:bookworm
FROM ${BASE}

# PIP_CERT: pip in a venv trusts its own CA list; the system's is the one an operator controls.
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOST=0.0.0.0 \
    PORT=3000 \
    CLARITY_DATA_DIR=/var/lib/clarity/data

# Dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock /opt/clarity/requirements.lock
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --home-dir /var/lib/clarity --create-home \
        --shell /usr/sbin/nologin clarity \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r /opt/clarity/requirements.lock

COPY . /opt/clarity/src/
RUN /opt/venv/bin/pip install --no-deps /opt/clarity/src \
    && rm -rf /opt/clarity/src

USER clarity
WORKDIR /var/lib/clarity
CMD ["clarity", "serve"]
