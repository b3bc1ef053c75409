#!/usr/bin/env bash
# Installs the external tools the tests and the local pipeline need, when missing:
#   - the Temporal CLI (its dev server is a real Temporal server): the Temporal SDK's download where Temporal's
#     release host is reachable, else `go install` from the Go module proxy (infra/temporal.ts says which);
#   - versitygw, an S3-compatible server (posix backend), from the Go module proxy;
#   - Python's safetensors + numpy, for the format interoperability tests;
#   - Chromium (Debian's package, /usr/bin/chromium), for the report test that renders the page headless;
#   - nginx (Debian's package), the TLS-terminating proxy in front of the dev server in the TLS test;
#   - openssl, which makes that test's certificates.
#   - with --native (or --gpu), the native TensorFlow backend: infra/install-native.sh (--gpu: with CUDA).
# Prints where each tool is. Safe to run repeatedly.
set -euo pipefail

native=()
for arg in "$@"; do
  case "$arg" in
    --native) native=(bash "$(dirname "$0")/install-native.sh") ;;
    --gpu) native=(bash "$(dirname "$0")/install-native.sh" --gpu) ;;
    *) echo "install-tools: unknown option $arg (--native or --gpu)" >&2; exit 2 ;;
  esac
done

gobin() {
  local bin
  bin="$(go env GOBIN 2>/dev/null || true)"
  [ -n "$bin" ] || bin="$(go env GOPATH)/bin"
  echo "$bin"
}

find_tool() {
  local name=$1
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  if command -v go >/dev/null 2>&1 && [ -x "$(gobin)/$name" ]; then echo "$(gobin)/$name"; return 0; fi
  return 1
}

install_go_tool() {
  local name=$1; shift
  if find_tool "$name" >/dev/null; then return 0; fi
  command -v go >/dev/null 2>&1 || { echo "install-tools: go is required to install $name" >&2; return 1; }
  local module
  for module in "$@"; do
    echo "install-tools: go install $module" >&2
    if go install "$module" >&2; then return 0; fi
    echo "install-tools: $module failed, trying the next version" >&2
  done
  echo "install-tools: could not install $name" >&2
  return 1
}

temporal=$(node --import tsx "$(dirname "$0")/temporal.ts")
if [ "${SKIP_S3_SERVER:-0}" != 1 ]; then
  install_go_tool versitygw github.com/versity/versitygw/cmd/versitygw@v1.7.0 || \
    echo "install-tools: versitygw unavailable; S3 tests fall back to moto_server if present" >&2
fi

if ! python3 -c 'import safetensors, numpy' >/dev/null 2>&1; then
  echo "install-tools: pip install safetensors numpy" >&2
  python3 -m pip install --quiet safetensors numpy >&2
fi

# moto_server: a second, independent S3 implementation (the writer-race tests run on both servers).
if ! find_tool moto_server >/dev/null; then
  echo "install-tools: pip install moto[server]" >&2
  python3 -m pip install --quiet "moto[server]" >&2 || echo "install-tools: could not install moto" >&2
fi

# The report test opens the page in Chromium (playwright-core with executablePath, no browser download).
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: apt-get install chromium" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2 ||
      echo "install-tools: could not install chromium; the report test will fail" >&2
  else
    echo "install-tools: $CHROMIUM is missing and cannot be installed here (needs root and apt-get):" >&2
    echo "install-tools:   sudo apt-get install chromium, or set CHROMIUM_PATH; the report test fails without it" >&2
  fi
fi

# The TLS test puts nginx in front of the dev server (TLS, mTLS and API keys) and makes its certificates
# with openssl.
missing_debs=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing_debs+=(nginx)
command -v openssl >/dev/null 2>&1 || missing_debs+=(openssl)
if [ "${#missing_debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: apt-get install ${missing_debs[*]}" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}"; } >&2 ||
      echo "install-tools: could not install ${missing_debs[*]}; the TLS test will fail" >&2
  else
    echo "install-tools: ${missing_debs[*]} missing and cannot be installed here (needs root and apt-get)" >&2
  fi
fi

if [ ${#native[@]} -gt 0 ]; then "${native[@]}"; fi

echo "temporal: $temporal"
echo "versitygw: $(find_tool versitygw || echo missing)"
echo "moto_server: $(find_tool moto_server || echo missing)"
echo "chromium: $([ -x "$CHROMIUM" ] && echo "$CHROMIUM" || echo missing)"
echo "nginx: $(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || echo missing)"
echo "python safetensors: $(python3 -c 'import safetensors; print(safetensors.__version__)')"
