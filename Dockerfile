# The hub's image: the gateway (`sse-hub`) and the publisher CLI (`sse-publish`).
# The same install and the same commands as the tests run.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub hub
COPY publisher publisher
COPY web web
RUN pip install --no-cache-dir -e .
ENV HUB_HOST=0.0.0.0 HUB_PORT=8000
EXPOSE 8000
# SIGTERM ends every stream cleanly; give it the shutdown deadline and a little more.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
CMD ["sse-hub"]
