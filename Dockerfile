# syntax=docker/dockerfile:1
# The ctreap node agent: one static binary in an image FROM scratch.
#   docker build -t REGISTRY/ctreap:0.1.0 .
# Without Docker or a registry: scripts/image builds the same image with buildah (and is the one
# the tests run). deploy/kubernetes/30-daemonset.yaml and deploy/helm/ctreap run it as
# `ctreap run ...`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY scripts/build-static scripts/build-static
# The git revision for ctreap_build_info (the build context has no .git):
#   docker build --build-arg CTREAP_GIT_REVISION="$(git rev-parse --short=12 HEAD)" ...
ARG CTREAP_GIT_REVISION=unknown
# scripts/build-static says how the binary is built (static glibc, no debug info) and
# fails if it is not static; scripts/image runs the same script.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CTREAP_GIT_REVISION="$CTREAP_GIT_REVISION" scripts/build-static /ctreap

# FROM scratch, not distroless: this is the image scripts/image builds and the tests run
# (crates/ctreap/tests/image.rs, under the chart's securityContext), and distroless cannot be
# pulled where they run. A static binary running as uid 0 needs nothing of distroless's static
# base but its CA bundle: no libc, no /etc/passwd (the DaemonSet sets runAsUser: 0, the default
# here too), no tzdata (timestamps are UTC), no /tmp (the root filesystem is read-only). The
# kubelet mounts /etc/resolv.conf, /etc/hosts and the service account. The CA bundle is for an
# API server whose kubeconfig names no CA (rustls then trusts the system's roots).
# ctreap needs CAP_NET_ADMIN for ctnetlink, and Kubernetes cannot grant a non-root process
# capabilities (a pod spec has no ambient capabilities), so the agent runs as uid 0 with every
# other capability dropped (the DaemonSet's securityContext); `docker run --cap-drop ALL
# --cap-add NET_ADMIN --network host` behaves the same.
FROM scratch
COPY --from=build /ctreap /ctreap
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/ctreap"]
CMD ["run"]
