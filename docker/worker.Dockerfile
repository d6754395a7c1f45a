# A worker: `emopres worker` (Celery), one process per GPU, models loaded once and kept resident.
# The paper profile reads its weights from EMOPRES_MODEL_DIR (mounted read-only); nothing is
# downloaded at run time. Built by docker-compose.yml.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/emopres
# the CUDA build of the pinned torch first, then the package with the paper-profile extras
COPY pyproject.toml README.md ./
RUN pip install --index-url https://download.pytorch.org/whl/cu128 "torch==2.13.0"
COPY emopres_client ./emopres_client
COPY core ./core
COPY app ./app
COPY worker ./worker
COPY models ./models
COPY cli ./cli
RUN pip install ".[server,paper]"

RUN useradd --create-home --uid 10001 emopres && mkdir -p /data /models && chown emopres /data
USER emopres
ENV EMOPRES_DATA_DIR=/data \
    EMOPRES_MODEL_DIR=/models \
    EMOPRES_DEVICE=cuda

CMD ["emopres", "worker", "--concurrency", "1"]
