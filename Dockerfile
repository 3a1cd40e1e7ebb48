# The hub's image: the gateway (`sse-hub`) and the publisher CLI (`sse-publish`), with
# the exact dependency versions the tests run with (constraints.txt), run as a user
# without privileges.
FROM python:3.11-slim
WORKDIR /app
# The dependencies first, in a layer of their own: editing the code does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir --disable-pip-version-check -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY README.md ./
COPY hub hub
COPY publisher publisher
COPY web web
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps -e . \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent hub
USER hub
ENV HUB_HOST=0.0.0.0 HUB_PORT=8000 PYTHONUNBUFFERED=1
EXPOSE 8000
# SIGTERM ends every stream (their browsers reconnect to another gateway), then the
# process exits within HUB_SHUTDOWN_SECONDS.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
CMD ["sse-hub"]
