"""The anchor of bench/native.ts: the same GPT training step as model/gpt.ts + model/adamw.ts, written in
Python TensorFlow as one tf.function (a graph, not op-by-op dispatch), run from the same initial weights and
batch that bench/lib/step-child.ts wrote.

Usage: python gpt_step.py <dir with init.safetensors and batch.json> <warmup> <steps> <threads>
Prints one JSON line: median / min / max ms per step and the first losses (which must match the TypeScript
run's: the bench checks that this is the same computation).
"""

import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

RMS_EPS = 1.1920928955078125e-7  # float32 epsilon, as model/ops.ts
SOFTCAP = 15.0
MASKED = -1e9
BETA1, BETA2, EPS = 0.9, 0.95, 1e-8  # AdamW defaults of model/adamw.ts, no weight decay


def rms_norm(x):
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + RMS_EPS)


def rotary_tables(T, D, base=10000.0):
    half = D // 2
    cos = np.zeros((T, D), np.float32)
    sin = np.zeros((T, D), np.float32)
    for t in range(T):
        for i in range(half):
            angle = t / base ** ((2 * i) / D)
            cos[t, i] = cos[t, half + i] = math.cos(angle)
            sin[t, i] = sin[t, half + i] = math.sin(angle)
    swap = np.zeros((D, D), np.float32)
    for j in range(half):
        swap[j + half, j] = 1.0
        swap[j, j + half] = -1.0
    return tf.constant(cos), tf.constant(sin), tf.constant(swap)


def attention_mask(T, window, rep):
    t = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    one = np.where((j > t) | (t - j > window), MASKED, 0.0).astype(np.float32)
    return tf.constant(np.tile(one, (rep, 1)))


def main():
    folder, warmup, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    with open(os.path.join(folder, "batch.json")) as f:
        spec = json.load(f)
    cfg, B, lr = spec["config"], spec["batch"], spec["lr"]
    # This step writes out the project's first architecture (model/config.ts LEGACY_ARCHITECTURE) and
    # nothing else: refuse any other, rather than time a different computation.
    legacy = {"rotary_base": 10000, "rotary_dtype": "float32", "qk_scale": 1, "short_window": "half",
              "logit_softcap": SOFTCAP, "norm_eps": RMS_EPS,
              "vocab_multiple": 1, "value_embeds": False, "smear": False, "backout": False}
    other = {k: cfg.get(k) for k, v in legacy.items() if cfg.get(k) != v}
    if other:
        sys.exit(f"gpt_step.py: config is not the legacy architecture it implements: {other} (expected {legacy})")
    T, V, L = cfg["sequence_len"], cfg["vocab_size"], cfg["n_layer"]
    C, H, Hkv = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
    D, rep = C // H, H // Hkv
    short = T // 2
    windows = [
        short if cfg["window_pattern"][i % len(cfg["window_pattern"])] == "S" and i != L - 1 else T
        for i in range(L)
    ]
    cos, sin, swap = rotary_tables(T, D)
    masks = [attention_mask(T, w, rep) for w in windows]
    params = {k: tf.Variable(v) for k, v in load_file(os.path.join(folder, "init.safetensors")).items()}
    names = list(params)
    m = {k: tf.Variable(tf.zeros_like(v)) for k, v in params.items()}
    v2 = {k: tf.Variable(tf.zeros_like(v)) for k, v in params.items()}
    inputs = tf.constant(np.array(spec["inputs"], np.int32))
    targets = tf.constant(np.array(spec["targets"], np.int32))

    def linear(x, name):
        return tf.matmul(x, params[name], transpose_b=True)

    def heads(t, n):
        return tf.transpose(tf.reshape(t, [B, T, n, D]), [0, 2, 1, 3])

    def rotate(x):
        swapped = tf.reshape(tf.matmul(tf.reshape(x, [-1, D]), swap), tf.shape(x))
        return x * cos + swapped * sin

    def attention(x, i):
        p = f"transformer.h.{i}.attn."
        q = rms_norm(rotate(heads(linear(x, p + "c_q.weight"), H)))
        k = rms_norm(rotate(heads(linear(x, p + "c_k.weight"), Hkv)))
        v = heads(linear(x, p + "c_v.weight"), Hkv)
        q3 = tf.reshape(q, [B * Hkv, rep * T, D])
        k3 = tf.reshape(k, [B * Hkv, T, D])
        v3 = tf.reshape(v, [B * Hkv, T, D])
        scores = tf.matmul(q3, k3, transpose_b=True) * (1 / math.sqrt(D)) + masks[i]
        y = tf.matmul(tf.nn.softmax(scores), v3)
        merged = tf.reshape(tf.transpose(tf.reshape(y, [B, H, T, D]), [0, 2, 1, 3]), [B * T, C])
        return linear(merged, p + "c_proj.weight")

    def mlp(x, i):
        h = linear(x, f"transformer.h.{i}.mlp.c_fc.weight")
        return linear(tf.square(tf.nn.relu(h)), f"transformer.h.{i}.mlp.c_proj.weight")

    def loss_fn():
        onehot = tf.one_hot(tf.reshape(inputs, [-1]), V, dtype=tf.float32)
        x = rms_norm(tf.matmul(onehot, params["transformer.wte.weight"]))
        x0 = x
        for i in range(L):
            x = x * params["resid_lambdas"][i] + x0 * params["x0_lambdas"][i]
            x = x + attention(rms_norm(x), i)
            x = x + mlp(rms_norm(x), i)
        logits = linear(rms_norm(x), "lm_head.weight")
        logits = tf.tanh(logits / SOFTCAP) * SOFTCAP
        target = tf.one_hot(tf.reshape(targets, [-1]), V, dtype=tf.float32)
        count = tf.maximum(tf.reduce_sum(target), 1.0)
        return -tf.reduce_sum(target * tf.nn.log_softmax(logits)) / count

    @tf.function
    def step(step_size, bc2_sqrt):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, [params[n] for n in names])
        for n, g in zip(names, grads):
            m[n].assign(m[n] * BETA1 + g * (1 - BETA1))
            v2[n].assign(v2[n] * BETA2 + tf.square(g) * (1 - BETA2))
            denom = tf.sqrt(v2[n]) / bc2_sqrt + EPS
            params[n].assign_sub(m[n] / denom * step_size)
        return loss

    times, losses = [], []
    for s in range(warmup + steps):
        t = s + 1
        # Host-side float64 coefficients, as model/adamw.ts computes them.
        step_size = tf.constant(lr / (1 - BETA1**t), tf.float32)
        bc2_sqrt = tf.constant(math.sqrt(1 - BETA2**t), tf.float32)
        t0 = time.perf_counter()
        loss = float(step(step_size, bc2_sqrt).numpy())
        elapsed = (time.perf_counter() - t0) * 1000
        losses.append(loss)
        if s >= warmup:
            times.append(elapsed)
    times.sort()
    print(
        json.dumps(
            {
                "backend": "python-tensorflow",
                "tf_version": tf.__version__,
                "threads": threads,
                "medianMs": float(np.median(times)),
                "minMs": times[0],
                "maxMs": times[-1],
                "losses": losses[:3],
            }
        )
    )


if __name__ == "__main__":
    main()
