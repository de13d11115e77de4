# The pause-ledger image: one static binary on an empty base. No shell, no package manager,
# no CA bundle, no libc, nothing to patch but the binary itself.
#
# Build with tools/image (buildah, no Docker daemon needed), which first compiles the static
# binary with the host toolchain:
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu --bin pause-ledger
# The Dockerfile only copies it, so the build needs no base image from a registry and reuses the
# cargo cache. `docker build .` works the same after that cargo command.
#
# Certificates: none are needed in the image. In a pod the client trusts exactly the cluster CA
# mounted with the ServiceAccount token (/var/run/secrets/kubernetes.io/serviceaccount/ca.crt);
# with a kubeconfig it trusts that kubeconfig's certificate-authority(-data). Only a kubeconfig
# that names no CA falls back to system roots: mount a bundle and set SSL_CERT_FILE for that.
FROM scratch

ARG BINARY=target/x86_64-unknown-linux-gnu/release/pause-ledger
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z

LABEL org.opencontainers.image.title="pause-ledger" \
      org.opencontainers.image.description="Restores what a platform upgrade paused, from a recorded ledger" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="scratch"

# Owned by root and not writable: the non-root user can run it, not replace it.
COPY --chown=0:0 --chmod=0555 ${BINARY} /pause-ledger

# The distroless `nonroot` uid/gid; numeric, since there is no /etc/passwd to look a name up in.
USER 65532:65532
ENTRYPOINT ["/pause-ledger"]
