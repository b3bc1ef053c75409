#!/usr/bin/env python3
"""Evaluates one committed step of the python-mlp example on its held-out set.

Environment: CKPT_DIR, CKPT_STEP (the step), CKPT_CONFIG (optional: overrides, e.g. eval_samples),
CKPT_SEED (optional: default the seed recorded in the checkpoint's meta). Prints one JSON line on stdout,
{"loss": ..., "accuracy": ...}. Exit codes: 0 done, 2 bad config or environment, 1 otherwise.
"""
from __future__ import annotations

import json
import sys

import numpy as np

import mlp
import temporal_ckpt


def evaluate(ev: temporal_ckpt.EvalRun) -> None:
    ckpt = ev.load()
    saved = ckpt.meta.get("config")
    if not isinstance(saved, dict):
        raise mlp.ConfigError(f"step {ev.step}: meta has no config")
    config = mlp.make_config({**saved, **ev.config})
    seed = ev.seed if ev.seed is not None else ckpt.meta.get("seed")
    if not isinstance(seed, int):
        raise mlp.ConfigError(f"step {ev.step}: no seed (set CKPT_SEED or record 'seed' in meta)")
    mlp.check_params(ckpt.model, config, f"model of step {ev.step}")
    x, y = mlp.eval_set(seed, config)
    _, _, logits = mlp.forward(ckpt.model, x)
    logp = mlp.log_softmax(logits)
    loss = float(-logp[np.arange(len(y)), y].astype(np.float64).mean())
    accuracy = float((logits.argmax(axis=1) == y).mean())
    sys.stdout.write(json.dumps({"loss": loss, "accuracy": accuracy}) + "\n")
    sys.stdout.flush()


def main() -> None:
    temporal_ckpt.main(lambda: evaluate(temporal_ckpt.current_eval()))


if __name__ == "__main__":
    main()
