# syntax=docker/dockerfile:1
# The ctreap node agent: one static binary on a distroless base.
#   docker build -t REGISTRY/ctreap:0.1.0 .
# deploy/kubernetes/30-daemonset.yaml and deploy/helm/ctreap run it as `ctreap run ...`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# Static glibc (static-pie): the final image has no libc. An explicit --target keeps build
# scripts and proc macros dynamic (crt-static breaks proc macros); the host triple of this
# stage is the image's architecture, under buildx emulation too. The musl target would need a
# toolchain download; glibc's static libc.a is already in this image.
# The release profile keeps line tables (debug = 1) for profiling; the image drops them.
# The git revision for ctreap_build_info (the build context has no .git):
#   docker build --build-arg CTREAP_GIT_REVISION="$(git rev-parse --short=12 HEAD)" ...
ARG CTREAP_GIT_REVISION=unknown
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" && \
    CTREAP_GIT_REVISION="$CTREAP_GIT_REVISION" \
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=debuginfo \
      cargo build --release --locked -p ctreap --no-default-features --target "$target" && \
    cp "target/$target/release/ctreap" /ctreap && \
    { ldd /ctreap 2>&1 | grep -Eq 'statically linked|not a dynamic executable' || \
      { echo "ctreap is dynamically linked" >&2; exit 1; }; }

# distroless "static" in its root variant, not :nonroot. ctreap needs CAP_NET_ADMIN for
# ctnetlink, and Kubernetes cannot grant a non-root process capabilities (there are no ambient
# capabilities in a pod spec), so the agent runs as uid 0 with every other capability dropped
# (the DaemonSet's securityContext). The manifests set runAsUser: 0 themselves; this base
# makes `docker run --cap-drop ALL --cap-add NET_ADMIN --network host` behave the same.
FROM gcr.io/distroless/static-debian12
COPY --from=build /ctreap /ctreap
ENTRYPOINT ["/ctreap"]
CMD ["run"]
