# LoopLlama: one image for both processes. The default command runs the API;
# docker-compose.yml runs the worker from the same image with `loopllama worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# Install as a regular (non-editable) package, then drop the sources: the console
# script `loopllama` and the packages live in site-packages from here on.
RUN pip install --no-cache-dir . \
    && cd / \
    && rm -rf /src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin loopllama \
    && mkdir -p /var/lib/loopllama/blobs \
    && chown -R loopllama /var/lib/loopllama

# Non-root. The working directory is the user's home, so the default data directory
# (.loopllama, or LOOPLLAMA_DATA_DIR) is writable; so is the blob store's mount point
# (a named volume starts with the ownership it has here).
USER loopllama
WORKDIR /home/loopllama

EXPOSE 8000
CMD ["loopllama", "api", "--host", "0.0.0.0", "--port", "8000"]
