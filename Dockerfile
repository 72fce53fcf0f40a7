FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY config ./config
RUN pip install --no-cache-dir .
RUN useradd --create-home exporter && mkdir -p /data/exports /tmp/prom && chown exporter /data/exports /tmp/prom
USER exporter
ENV EXPORT_WORKER_OUTPUT_DIR=/data/exports
CMD ["celery", "-A", "worker.app", "worker", "-l", "INFO"]
