# The service image: `clusterer worker` (default) and `clusterer api`.
#   CPU:  docker build -t stage4-clusterer .
#   GPU:  docker build --build-arg FAISS=gpu -t stage4-clusterer:gpu .
#         (faiss-gpu wheels bundle the CUDA 12 runtime from PyPI; the host needs an NVIDIA
#          driver for CUDA 12 and the NVIDIA container toolkit: docker run --gpus all ...)
FROM python:3.11-slim
ARG FAISS=cpu
WORKDIR /app
ENV NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONDONTWRITEBYTECODE=1
COPY . .
RUN test "$FAISS" = cpu -o "$FAISS" = gpu \
    && pip install --no-cache-dir ".[$FAISS]" \
    && useradd --uid 10001 --no-create-home clusterer
USER 10001
EXPOSE 8080 8000
ENTRYPOINT ["clusterer"]
CMD ["worker"]
