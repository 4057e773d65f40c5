# The worker image: `clusterer worker`. Build: docker build -t stage4-clusterer .
FROM python:3.11-slim
WORKDIR /app
ENV NUMBA_CACHE_DIR=/tmp/numba-cache
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY processors processors
COPY stream stream
COPY state state
RUN pip install --no-cache-dir . && useradd --uid 10001 clusterer
USER 10001
EXPOSE 8080
ENTRYPOINT ["clusterer"]
CMD ["worker"]
