# Stand-in for python:3.11-slim: Debian bookworm's Python 3.11, with `python` and `pip`
# on the PATH and pip free to install system-wide, as in the official image.
FROM sse-hub-standin/debian:bookworm
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip
CMD ["python3"]
