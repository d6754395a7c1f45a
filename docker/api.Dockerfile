# The API: `emopres serve` (slim, CPU). Settings come from the environment (EMOPRES_*); with
# EMOPRES_DATABASE_URL (PostgreSQL) and EMOPRES_BROKER_URL (Redis) it only accepts and serves jobs,
# the workers evaluate. Built by docker-compose.yml (also used for the one-shot `emopres db upgrade`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/emopres
# CPU torch first (the pinned version), so that the package install does not pull a CUDA build
COPY pyproject.toml README.md ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY emopres_client ./emopres_client
COPY core ./core
COPY app ./app
COPY worker ./worker
COPY models ./models
COPY cli ./cli
RUN pip install ".[server]"

RUN useradd --create-home --uid 10001 emopres && mkdir -p /data && chown emopres /data
USER emopres
ENV EMOPRES_DATA_DIR=/data

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["emopres", "serve", "--host", "0.0.0.0", "--port", "8000"]
