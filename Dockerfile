# syntax=docker/dockerfile:1
# luna-sender image: docker build -t luna-sender .   (docker-compose.yml adds Redis)
#
# The base is pinned by digest so a rebuild gets the same OS and Python. To move to a newer
# python:3.11-slim-bookworm, look the digest up and replace it in both FROM lines:
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# (or: docker pull python:3.11-slim-bookworm && docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim-bookworm)

# --- build: dependencies first (cached until pyproject.toml changes), then the wheel --------
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
RUN python -m venv /venv \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /venv/bin/pip install --requirement requirements.txt
COPY README.md setup.py MANIFEST.in ./
COPY luna_sender ./luna_sender
COPY docs ./docs
# The wheel carries the manual (setup.py); build/ and egg-info stay behind in this stage.
RUN /venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /venv/bin/pip install --no-deps /wheels/*.whl

# --- runtime: the virtualenv and the settings file, nothing else -------------------------------
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
# The settings file is named by LUNA_SENDER_CONFIG, not by a flag, so the service and the
# HEALTHCHECK read the same file, and `-e LUNA_SENDER_CONFIG=/etc/x.yaml` moves both.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/venv/bin:$PATH \
    LUNA_SENDER_CONFIG=/app/config.yaml
RUN groupadd --system --gid 10001 luna \
    && useradd --system --uid 10001 --gid 10001 --no-create-home luna
COPY --from=build /venv /venv
WORKDIR /app
COPY config.yaml ./
USER 10001:10001
EXPOSE 5080
# No curl in the image: a stdlib client that reads the same settings as the service.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "luna_sender.healthcheck"]
# Exec form: the process is PID 1 and receives SIGTERM directly (graceful 1001 closes).
# No --host/--port here: config.yaml listens on 0.0.0.0:5080 and LUNA_SENDER_HOST/_PORT override.
ENTRYPOINT ["luna-sender"]
