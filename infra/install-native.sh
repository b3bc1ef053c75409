#!/usr/bin/env bash
# Installs the native TensorFlow backend without tfjs-node's own download: builds the binding of
# @tensorflow/tfjs-node@4.22.0 from source against the TensorFlow C API that PyPI's TensorFlow wheel ships
# (inside libtensorflow_cc.so.2, beside libtensorflow_framework.so.2; headers under tensorflow/include).
#
#   bash infra/install-native.sh          # CPU: @tensorflow/tfjs-node, wheel tensorflow-cpu
#   bash infra/install-native.sh --gpu    # CUDA: @tensorflow/tfjs-node-gpu, wheel tensorflow + the CUDA 12 /
#                                         # cuDNN 9 wheels of its and-cuda extra (needs an NVIDIA driver to run)
#   bash infra/install-native.sh --force  # rebuild even when a working binding is in place
#
# The wheel is fetched with pip (download only: nothing is installed into any Python). Only the libraries
# (stripped) and the headers are kept, in a cache outside the checkout ($TEMPORAL_CKPT_CACHE, default
# ${XDG_CACHE_HOME:-~/.cache}/temporal-ckpt); `npm ci` or `npm install` deletes the package's deps/ and
# binding, and a re-run then rebuilds from the cache without downloading. Safe to run repeatedly.
# Run it from the root of the project whose node_modules gets the binding (this checkout, or a project that
# depends on temporal-ckpt). Needs: node and npm, python3 with pip, a C++ compiler and make, and Node's
# headers (found beside the node executable; otherwise node-gyp fetches them).
set -euo pipefail

TF_VERSION=2.21.0
TFJS_NODE_VERSION=4.22.0
# The C API sits in these two libraries; the binding links -ltensorflow -ltensorflow_framework.
LIBS=(libtensorflow_cc.so.2 libtensorflow_framework.so.2)
# The headers the binding includes, with what they include in turn.
HEADERS=('tensorflow/c/*' 'xla/tsl/c/*' 'tsl/platform/ctstring*' 'tensorflow/core/platform/ctstring*')
# Names the binding is linked against and that tfjs-node's own install script checks for (its libtensorflow
# version is 2.9.1): all point at the 2.21 libraries.
ALIASES=(libtensorflow.so:libtensorflow_cc.so.2 libtensorflow.so.2.9.1:libtensorflow_cc.so.2
  libtensorflow_framework.so:libtensorflow_framework.so.2
  libtensorflow_framework.so.2.9.1:libtensorflow_framework.so.2)

gpu=0
force=0
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --force) force=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "install-native: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$gpu" = 1 ]; then
  package=@tensorflow/tfjs-node-gpu wheel=tensorflow
else
  package=@tensorflow/tfjs-node wheel=tensorflow-cpu
fi
pkgdir="node_modules/$package"
cache="${TEMPORAL_CKPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/temporal-ckpt}/native/$wheel-$TF_VERSION"
stamp="$wheel==$TF_VERSION tfjs-node $TFJS_NODE_VERSION node-abi $(node -p process.versions.modules)"
log() { echo "install-native: $*" >&2; }

[ "$(uname -sm)" = "Linux x86_64" ] || { log "only Linux x86_64 is supported (TensorFlow's wheels)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Loads the package in a fresh process and runs one op; prints the backend and TensorFlow's version.
probe() {
  TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-0} node -e "
    const tf = require('$package');
    if (tf.add(tf.scalar(1), 1).dataSync()[0] !== 2) throw new Error('1 + 1 != 2');
    console.log(tf.getBackend() + ', TensorFlow ' + tf.backend().binding.TF_Version);
  "
}

if [ "$force" = 0 ] && [ "$(cat "$pkgdir/deps/.temporal-ckpt" 2>/dev/null)" = "$stamp" ] &&
  ready=$(probe 2>/dev/null); then
  log "$package already built ($ready)"
  exit 0
fi

# --------------------------------------------------------------------------------------------- package
# @tensorflow/tfjs-node is a devDependency with its install script denied (package.json allowScripts): it
# is in node_modules after `npm ci`. tfjs-node-gpu is only an optional peer, which npm does not install
# into the project that declares it; unpack it beside tfjs-node, whose dependencies are the same.
if [ ! -f "$pkgdir/package.json" ]; then
  [ "$gpu" = 1 ] || { log "$PWD/$pkgdir is missing: run npm ci first (or npm install $package@$TFJS_NODE_VERSION --ignore-scripts)"; exit 1; }
  [ -f node_modules/@mapbox/node-pre-gyp/package.json ] ||
    { log "$package needs tfjs-node's dependencies: run npm ci first, or install $package yourself"; exit 1; }
  log "npm pack $package@$TFJS_NODE_VERSION"
  (cd "$tmp" && npm pack --silent "$package@$TFJS_NODE_VERSION" >/dev/null)
  mkdir -p "$pkgdir"
  tar xzf "$tmp"/*.tgz -C "$pkgdir" --strip-components=1
fi
version=$(node -p "require('./$pkgdir/package.json').version")
[ "$version" = "$TFJS_NODE_VERSION" ] ||
  { log "$pkgdir is version $version; this script builds $TFJS_NODE_VERSION"; exit 1; }

# ----------------------------------------------------------------------------------------------- cache
if [ -f "$cache/complete" ]; then
  log "libraries from the cache $cache"
else
  log "downloading $wheel==$TF_VERSION with pip into the cache $cache"
  rm -rf "$cache"
  mkdir -p "$cache/lib" "$cache/include"
  wheels="$tmp/wheels"
  mkdir -p "$wheels"
  # The libraries do not depend on the Python version: pin one wheel (cp311, manylinux_2_27) for all hosts.
  pip_download() {
    python3 -m pip download --quiet --no-deps --no-cache-dir --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 -d "$wheels" "$@"
  }
  pip_download "$wheel==$TF_VERSION"
  python3 - "$wheels"/*.whl "$cache" "${LIBS[@]}" -- "${HEADERS[@]}" <<'PY'
import fnmatch, os, shutil, sys, zipfile
wheel, cache, *rest = sys.argv[1:]
split = rest.index('--')
libs, headers = rest[:split], rest[split + 1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith('/'):
            continue
        rel = name.removeprefix('tensorflow/')
        if rel in libs:
            dest = os.path.join(cache, 'lib', rel)
        elif rel.startswith('include/') and any(fnmatch.fnmatch(rel[8:], h) for h in headers):
            dest = os.path.join(cache, rel)
        else:
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(name) as src, open(dest, 'wb') as out:
            shutil.copyfileobj(src, out)
missing = [l for l in libs if not os.path.exists(os.path.join(cache, 'lib', l))]
if missing:
    sys.exit(f'install-native: {os.path.basename(wheel)} has no {", ".join(missing)}')
PY
  if [ "$gpu" = 1 ]; then
    # The CUDA libraries come from the nvidia-* wheels that the and-cuda extra lists, laid out as in a
    # Python environment (nvidia/<name>/lib), which the TensorFlow libraries' RUNPATH looks for.
    mapfile -t cuda < <(python3 - "$wheels"/tensorflow-*.whl <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    for line in z.read(meta).decode().splitlines():
        if line.startswith('Requires-Dist:') and 'extra == "and-cuda"' in line:
            print(line.split(':', 1)[1].split(';')[0].strip())
PY
    )
    log "downloading ${#cuda[@]} CUDA wheels: ${cuda[*]}"
    pip_download "${cuda[@]}"
    for w in "$wheels"/nvidia_*.whl; do
      python3 - "$w" "$cache" <<'PY'
import os, shutil, sys, zipfile
wheel, cache = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith('nvidia/') and '/lib/' in name and '.so' in name and not name.endswith('/'):
            dest = os.path.join(cache, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, 'wb') as out:
                shutil.copyfileobj(src, out)
PY
    done
  fi
  rm -rf "$wheels"  # 274 MB (the CUDA wheels: about 3 GB) that the cache does not need
  if command -v strip >/dev/null 2>&1; then
    strip --strip-unneeded "$cache"/lib/*.so.*
  else
    log "strip not found: keeping the libraries unstripped"
  fi
  echo "$wheel==$TF_VERSION" >"$cache/complete"
fi

# ---------------------------------------------------------------------------------------------- layout
log "laying out $pkgdir/deps"
rm -rf "${pkgdir:?}/deps" "${pkgdir:?}/lib" "${pkgdir:?}/build"
mkdir -p "$pkgdir/deps/lib"
# Hard links when the cache is on the same file system (no copy, and the binding survives a cleared cache).
cp -rl "$cache/include" "$pkgdir/deps/" 2>/dev/null || cp -r "$cache/include" "$pkgdir/deps/"
for lib in "${LIBS[@]}"; do
  ln -f "$cache/lib/$lib" "$pkgdir/deps/lib/$lib" 2>/dev/null || cp -f "$cache/lib/$lib" "$pkgdir/deps/lib/$lib"
done
for alias in "${ALIASES[@]}"; do ln -sf "${alias#*:}" "$pkgdir/deps/lib/${alias%%:*}"; done
if [ -d "$cache/nvidia" ]; then
  cp -rl "$cache/nvidia" "$pkgdir/deps/" 2>/dev/null || cp -r "$cache/nvidia" "$pkgdir/deps/"
fi

# ----------------------------------------------------------------------------------------------- build
# Node's own headers when they sit beside the executable (Debian's nodejs: /usr/include/node); otherwise
# node-gyp downloads them for the running version.
nodedir=$(dirname "$(dirname "$(command -v node)")")
gyp_args=(--build-from-source)
[ -f "$nodedir/include/node/node_api.h" ] && gyp_args+=("--nodedir=$nodedir")
npm_root=$(npm root -g)
[ -f "$npm_root/npm/node_modules/node-gyp/bin/node-gyp.js" ] &&
  export npm_config_node_gyp="$npm_root/npm/node_modules/node-gyp/bin/node-gyp.js"
log "building the binding (node-pre-gyp install ${gyp_args[*]})"
pregyp=$(node -p "require.resolve('@mapbox/node-pre-gyp/bin/node-pre-gyp', {paths: ['$pkgdir']})")
(cd "$pkgdir" && JOBS=$(nproc) node "$pregyp" install "${gyp_args[@]}" --loglevel=warn >&2)

ready=$(probe) || { log "the binding was built but does not load"; exit 1; }
echo "$stamp" >"$pkgdir/deps/.temporal-ckpt"
log "$package ready ($ready)"
