# CPU image of tamrl with its shipped checkpoints.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 1000 tamrl
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tamrl ./tamrl
COPY jobs ./jobs
COPY service ./service
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 && pip install .
USER tamrl
ENTRYPOINT ["tamrl"]
CMD ["--help"]
