# Sourced by scripts/lab and scripts/test: how to run the privileged part.
#
# The build runs as whoever typed the command, with their toolchain (rustup puts cargo in
# ~/.cargo/bin, which sudo's secure_path drops); only what needs root (network namespaces,
# CAP_NET_ADMIN, apt-get) is raised, and it keeps the caller's PATH, HOME and CARGO_HOME.
# As root, nothing is raised; without root and without sudo, it stops with the fix.

# The effective uid; CTREAP_FAKE_UID overrides it for tests/scripts.rs.
ctreap_uid() { echo "${CTREAP_FAKE_UID:-$(id -u)}"; }

# Prints the command prefix that raises privileges (nothing as root), or fails with the fix.
ctreap_root_prefix() {
  if [ "$(ctreap_uid)" -eq 0 ]; then
    return 0
  fi
  if ! command -v sudo >/dev/null 2>&1; then
    echo "$1: needs root (network namespaces, CAP_NET_ADMIN) and sudo is not installed; run it as root" >&2
    return 1
  fi
  echo "sudo -E env PATH=$PATH"
}
