# Sourced by scripts/image: podman and buildah as this project runs them, with vfs storage (the
# default, overlay, does not work on this kind of build machine) and the settings of
# scripts/podman/containers.conf. Expects $root (scripts/as-root.sh) and the repository root as
# the working directory. crates/ctreap/tests/image.rs runs podman with the same two settings.
CTREAP_CONTAINERS_CONF="$(pwd)/scripts/podman/containers.conf"
ctreap_podman() {
  # shellcheck disable=SC2086 # the prefix is words
  $root env CONTAINERS_CONF="$CTREAP_CONTAINERS_CONF" podman --storage-driver vfs "$@"
}
ctreap_buildah() {
  # shellcheck disable=SC2086
  $root env CONTAINERS_CONF="$CTREAP_CONTAINERS_CONF" buildah --storage-driver vfs "$@"
}
