#!/usr/bin/env bash
# One command for a GPU host: installs the CUDA backend (infra/install-native.sh --gpu), trains a few steps on
# the GPU, resumes from the last checkpoint, and prints the device TensorFlow used and the ms per step.
#
#   bash scripts/gpu-check.sh            # from a checkout, after npm ci
#
# Needs an NVIDIA driver (nvidia-smi) and access to the npm registry and PyPI: the CUDA 12 / cuDNN 9 libraries
# come from PyPI's nvidia-* wheels, about 3 GB. Exits non-zero, saying why, at the first check that fails.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "gpu-check: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: this host has no NVIDIA driver"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader >&2 ||
  fail "nvidia-smi sees no GPU"

bash infra/install-native.sh --gpu

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# Level 0: TensorFlow's own lines name the device it created ("Created device ... GPU:0 ... name: ...").
export CKPT_BACKEND=tensorflow-gpu TF_CPP_MIN_LOG_LEVEL=0
model=(--depth 4 --n-embd 256 --seq-len 256 --batch 8 --seed 1)

say "training 0 -> 20 on the GPU"
node bin/ckpt.js train --root "$root" --tag gpu "${model[@]}" --steps 20 --save-every 10 2>"$root/train.log" ||
  { tail -20 "$root/train.log" >&2; fail "training failed"; }
grep -q '^model backend: tensorflow-gpu' "$root/train.log" || fail "the log does not say 'model backend: tensorflow-gpu'"
device=$(grep -o 'Created device [^ ]*GPU:[0-9]*.*' "$root/train.log" | head -1)
[ -n "$device" ] || fail "TensorFlow created no GPU device (see $root/train.log)"

say "resuming 20 -> 30"
node bin/ckpt.js train --root "$root" --tag gpu --resume --steps 30 --save-every 10 2>"$root/resume.log" ||
  { tail -20 "$root/resume.log" >&2; fail "resume failed"; }
grep -q 'resuming .* from step 20' "$root/resume.log" || fail "the second run did not resume from step 20"

# ms per step without start-up: the benchmark's step child, same model.
config='{"n_layer":4,"n_embd":256,"sequence_len":256}'
step=$(node --import tsx bench/lib/step-child.ts tensorflow-gpu 5 20 8 "$config" 2>/dev/null)
ms=$(node -p "JSON.parse(process.argv[1]).medianMs.toFixed(1)" "$step")

echo "gpu-check: OK"
echo "device:   $device"
echo "backend:  tensorflow-gpu (trained 0 -> 20, resumed 20 -> 30)"
echo "ms/step:  $ms (median of 20; depth 4, n_embd 256, seq 256, batch 8)"
