# The Debian tree made by debootstrap, trusting the certificate authorities the host
# trusts: this network re-signs TLS, and pip inside an image must still reach its index.
ARG ROOTFS
FROM ${ROOTFS}
COPY host-ca/ /usr/local/share/ca-certificates/
# The mirror here may serve a snapshot whose Release files are past their Valid-Until
# date (signatures are still checked).
RUN echo 'Acquire::Check-Valid-Until "false";' > /etc/apt/apt.conf.d/99snapshot-mirror \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
