"""The model and data of the python-mlp example, shared by train.py and eval.py (numpy only).

A one-hidden-layer MLP classifies points of a three-armed 2-D spiral. Everything is a pure function of the
seed: the training set, the held-out set (another random stream), the initial parameters and the batch of
every step. All arithmetic is float32, so the parameters in memory between two steps are exactly the
float32 tensors a checkpoint holds: resuming from one reproduces the uninterrupted run bit for bit.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import numpy as np

import temporal_ckpt

FEATURES = 2
CLASSES = 3
PARAMS = ("W1", "b1", "W2", "b2")

DEFAULTS: Dict[str, Any] = {
    "hidden": 16,  # hidden units
    "lr": 0.1,  # SGD learning rate
    "momentum": 0.9,  # SGD momentum
    "batch": 32,  # global batch (split evenly across ranks)
    "samples": 2048,  # training set size
    "eval_samples": 1024,  # held-out set size (eval.py)
    "noise": 0.2,  # angular noise of the spiral
}

# Independent random streams, each keyed by [seed, stream, ...].
_TRAIN_DATA, _BATCH, _EVAL_DATA, _INIT = 0, 1, 2, 3


class ConfigError(temporal_ckpt.CkptError):
    """A config or checkpoint that retrying cannot fix: exit 2."""

    exit_code = 2


def make_config(given: Mapping[str, Any]) -> Dict[str, Any]:
    """DEFAULTS overridden by ``given``; an unknown key or a bad value raises ConfigError."""
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    config = {**DEFAULTS, **given}

    def number(key: str, integer: bool, low: float, high: float = float("inf")) -> None:
        v = config[key]
        ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
        if not ok or not low <= v <= high:
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"config {key} must be {kind} in [{low}, {high}], got {v!r}")

    number("hidden", True, 1, 4096)
    number("lr", False, 0.0, 100.0)
    number("momentum", False, 0.0, 0.999)
    number("batch", True, 1, 1 << 20)
    number("samples", True, 1, 1 << 24)
    number("eval_samples", True, 1, 1 << 24)
    number("noise", False, 0.0, 10.0)
    return config


def spiral(seed: int, stream: int, n: int, noise: float) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` points (float32 [n, 2]) and labels (int64 [n]) of the spiral, from random stream ``stream``."""
    rng = np.random.default_rng([seed, stream])
    y = rng.integers(0, CLASSES, n)
    t = rng.uniform(0.05, 1.0, n)
    angle = y * (2.0 * np.pi / CLASSES) + 4.0 * t + noise * rng.standard_normal(n)
    x = np.stack([t * np.sin(angle), t * np.cos(angle)], axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def train_set(seed: int, config: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    return spiral(seed, _TRAIN_DATA, config["samples"], config["noise"])


def eval_set(seed: int, config: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    return spiral(seed, _EVAL_DATA, config["eval_samples"], config["noise"])


def batch_indices(seed: int, step: int, config: Mapping[str, Any]) -> np.ndarray:
    """The global batch of step ``step`` (the step that takes the state from ``step`` to ``step + 1``)."""
    rng = np.random.default_rng([seed, _BATCH, step])
    indices: np.ndarray = rng.integers(0, config["samples"], config["batch"])
    return indices


def init_params(seed: int, config: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, _INIT])
    h = config["hidden"]
    return {
        "W1": (rng.standard_normal((FEATURES, h)) * np.sqrt(2.0 / FEATURES)).astype(np.float32),
        "b1": np.zeros(h, np.float32),
        "W2": (rng.standard_normal((h, CLASSES)) * np.sqrt(1.0 / h)).astype(np.float32),
        "b2": np.zeros(CLASSES, np.float32),
    }


def check_params(params: Mapping[str, np.ndarray], config: Mapping[str, Any], what: str) -> None:
    """ConfigError unless ``params`` has exactly the float32 tensors of the config's shapes."""
    expected = {k: v.shape for k, v in init_params(0, config).items()}
    if set(params) != set(expected):
        raise ConfigError(f"{what}: tensors {sorted(params)}, expected {sorted(expected)}")
    for k, shape in expected.items():
        if params[k].dtype != np.float32 or params[k].shape != shape:
            raise ConfigError(
                f"{what}: {k} is {params[k].dtype}{list(params[k].shape)}, the config needs float32{list(shape)}"
            )


def forward(params: Mapping[str, np.ndarray], x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pre-activation, hidden, logits), float32."""
    z1 = x @ params["W1"] + params["b1"]
    h = np.maximum(z1, np.float32(0))
    return z1, h, h @ params["W2"] + params["b2"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    out: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out


def loss_and_grads(
    params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, global_batch: int
) -> Tuple[float, int, Dict[str, np.ndarray]]:
    """Summed cross-entropy and correct count over (x, y), and the gradient of the *global* mean loss
    restricted to these samples (so the ranks' gradients add up to the full batch's)."""
    z1, h, logits = forward(params, x)
    logp = log_softmax(logits)
    rows = np.arange(len(y))
    loss_sum = float(-logp[rows, y].astype(np.float64).sum())
    correct = int((logits.argmax(axis=1) == y).sum())
    d = np.exp(logp)
    d[rows, y] -= np.float32(1)
    d /= np.float32(global_batch)
    dh = d @ params["W2"].T
    dz1 = dh * (z1 > 0)
    grads = {
        "W1": x.T @ dz1,
        "b1": dz1.sum(axis=0),
        "W2": h.T @ d,
        "b2": d.sum(axis=0),
    }
    return loss_sum, correct, {k: v.astype(np.float32, copy=False) for k, v in grads.items()}
