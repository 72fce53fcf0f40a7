FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY config ./config
# The parquet extra (pyarrow): every sink works in the image, --sink parquet included.
RUN pip install --no-cache-dir ".[parquet]"
RUN useradd --create-home exporter && mkdir -p /data/exports /tmp/prom && chown exporter /data/exports /tmp/prom
USER exporter
ENV EXPORT_WORKER_OUTPUT_DIR=/data/exports
# -E: task events, so Flower (and `celery events`) see every task.
CMD ["celery", "-A", "worker.app", "worker", "-E", "-l", "INFO"]
