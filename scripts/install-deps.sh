# Sourced by scripts/lab and scripts/test: installs the Debian packages whose commands are
# missing. Arguments: the root prefix (scripts/as-root.sh), then "command:package" pairs.
# Without apt-get it installs nothing; the command that needs them names what is missing.
ctreap_install_missing() {
  local root=$1 pair
  shift
  local need=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  if [ "${#need[@]}" -eq 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    return 0
  fi
  echo "installing ${need[*]}"
  # shellcheck disable=SC2086 # the prefix is words
  $root apt-get update -qq
  # shellcheck disable=SC2086
  $root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}
