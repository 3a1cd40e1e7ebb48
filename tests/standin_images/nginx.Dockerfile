# Stand-in for nginx:1.27-alpine: Debian unstable's nginx (1.30; bookworm's 1.22 lacks
# the `http2 on;` the compose file's TLS listener uses, which the official image has),
# with envsubst and wget as in the official image, and its default logs on the
# container's output.
FROM sse-hub-standin/debian:sid
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends nginx-light gettext-base wget \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
STOPSIGNAL SIGQUIT
EXPOSE 80
CMD ["nginx", "-g", "daemon off;"]
