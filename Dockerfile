# tamrl CPU image: the HTTP API by default, or a Dask scheduler or worker of the upscaling engine (docs/DEPLOY.md).
#
#   docker build -t tamrl:0.1.0 .
#   docker run -p 127.0.0.1:8000:8000 -v tamrl-cubes:/data/cubes tamrl:0.1.0          # API on loopback :8000
#   docker run tamrl:0.1.0 dask scheduler                                             # scheduler on :8786
#   docker run tamrl:0.1.0 dask worker tcp://scheduler:8786 --nthreads 1 --nworkers 4  # one process per core
#
# api, scheduler and workers must run this same image: Dask needs the same versions everywhere, and workers import
# jobs.engine and load the shipped checkpoints (tamrl/checkpoints/*.pt, package data) from site-packages.
# deploy/smoke.sh runs the same `pip install .` in a fresh virtual environment, for machines without Docker.
FROM python:3.11-slim

# torch==2.13.0 is pinned by pyproject.toml; this index supplies its CPU-only wheel (2.13.0+cpu, chosen over the
# PyPI wheel that pulls CUDA libraries). EXTRA_PACKAGES adds fsspec back ends, e.g. "s3fs" for s3:// drivers.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRA_PACKAGES=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TAMRL_CUBES=/data/cubes

RUN useradd --create-home --uid 1000 --user-group tamrl \
    && mkdir -p /data/cubes \
    && chown tamrl:tamrl /data/cubes

WORKDIR /app
COPY pyproject.toml README.md ./
COPY tamrl ./tamrl
COPY jobs ./jobs
COPY service ./service
# Checks run from / so that they import the installed package, not the sources, which are then removed.
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" . ${EXTRA_PACKAGES} \
    && cd / \
    && python -c "import torch; assert torch.version.cuda is None, 'a CUDA build of torch was installed'" \
    && python -c "import jobs.engine, service.api; from tamrl.checkpoint import resolve; resolve('met'), resolve('default')" \
    && rm -rf /app

USER tamrl
WORKDIR /home/tamrl
VOLUME ["/data/cubes"]
EXPOSE 8000 8786 8787

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/cubes', timeout=8)"]

# 0.0.0.0 inside the container, so that a published port reaches it; publish it on loopback (-p 127.0.0.1:8000:8000)
# or behind a TLS proxy, and set TAMRL_TOKEN (docs/DEPLOY.md, "Exposure").
CMD ["tamrl", "serve", "--host", "0.0.0.0", "--port", "8000"]
