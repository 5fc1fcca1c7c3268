FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LUNA_SENDER_DOCS_DIR=/app/docs
WORKDIR /app
COPY pyproject.toml README.md config.yaml ./
COPY luna_sender ./luna_sender
COPY docs ./docs
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home luna
USER luna
EXPOSE 5080
# Exec form: the process is PID 1 and receives SIGTERM directly (graceful 1001 closes).
ENTRYPOINT ["luna-sender", "--config", "/app/config.yaml", "--host", "0.0.0.0"]
