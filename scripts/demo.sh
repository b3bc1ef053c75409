#!/usr/bin/env bash
# The main job, locally: train a small GPT with checkpoints, then verify, inspect, evaluate, sample and
# prune them. Checkpoints go under ./runs/demo (override with DEMO_ROOT).
set -euo pipefail
cd "$(dirname "$0")/.."
root="${DEMO_ROOT:-runs/demo}"
dir="$root/base_checkpoints/d2"
ckpt() { node bin/ckpt.js "$@"; }

echo "== train d2 to step 60 (resumes if $dir already has checkpoints)"
ckpt train --root "$root" --depth 2 --steps 60 --save-every 20 --resume
echo "== list";                  ckpt list "$root"
echo "== verify";                ckpt verify "$dir"
echo "== last step";             ckpt last-step "$dir"
echo "== inspect (last step)";   ckpt inspect "$dir" | head -n 20
echo "== eval every checkpoint"
for step in $(ckpt list "$root" --json | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8"));for(const t of j.tags)for(const c of t.checkpoints)if(c.committed)console.log(c.step)'); do
  echo "step $step: val_bpb $(ckpt eval "$dir" --step "$step")"
done
echo "== sample";                ckpt sample "$dir" --prompt "The worker" --tokens 48 --temperature 0.8 --seed 1
echo "== prune --dry-run (keep the best 1 by val_bpb and the last 1)"
ckpt prune "$dir" --keep-last 1 --keep-best 1 --metric val_bpb --mode min --dry-run
