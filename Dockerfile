# The engine image: one worker process; scale out with more replicas (partitions bound the parallelism).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cxstream ./cxstream
RUN pip install --no-cache-dir . && useradd --system --uid 10001 cx && mkdir -p /data && chown cx /data
USER cx
ENV CX_DATA_DIR=/data CX_HTTP_HOST=0.0.0.0 CX_HTTP_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
ENTRYPOINT ["cxstream"]
CMD ["run"]
