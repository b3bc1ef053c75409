#!/usr/bin/env python3
"""Cross-checks our TypeScript safetensors module against the reference `safetensors` package (Rust core).

Driven by test/checkpoint/safetensors-python.test.ts; prints one JSON document on stdout:

  st_roundtrip.py check               versions of python, safetensors and numpy (fails if either is missing)
  st_roundtrip.py read FILE           what Python loads from FILE: metadata and, per tensor, dtype, shape,
                                      hex bytes and decoded values (numpy's own decoding where numpy can)
  st_roundtrip.py write DIR           writes DIR/numpy.safetensors (safetensors.numpy.save_file) and
                                      DIR/raw.safetensors (serialize_file: BF16, which numpy lacks) and
                                      describes them in the same form as `read`, plus each file's sha256
  st_roundtrip.py f16round            stdin: JSON list of float32 bit patterns; stdout: numpy's float16 bits

Values are JSON numbers, except non-finite floats ("nan", "inf", "-inf") and integers (decimal strings, so
64-bit values survive JSON).
"""
import hashlib
import json
import math
import os
import sys

import numpy as np
import safetensors
from safetensors import deserialize, safe_open
from safetensors.numpy import save_file

FLOATS = {"F64", "F32", "F16", "BF16"}


def bf16_to_f32(raw: bytes) -> np.ndarray:
    # bfloat16 is the top half of a float32: widen by shifting the bits up.
    return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


def values_of(dtype: str, arr: np.ndarray) -> list:
    flat = arr.reshape(-1)
    if dtype in FLOATS:
        out = []
        for v in flat.astype(np.float64).tolist():
            out.append(v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")))
        return out
    if dtype == "BOOL":
        return [bool(v) for v in flat.tolist()]
    return [str(int(v)) for v in flat.tolist()]


def describe(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    # deserialize: the Rust reader's view (raw bytes, header dtype strings); works for every dtype.
    raw = {name: info for name, info in deserialize(data)}
    tensors = {}
    # safe_open: the file-based loader users call; numpy cannot represent BF16, so those are decoded here.
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        for name in f.keys():
            info = raw[name]
            dtype = info["dtype"]
            if dtype == "BF16":
                arr = bf16_to_f32(bytes(info["data"]))
            else:
                arr = f.get_tensor(name)
                assert list(arr.shape) == list(info["shape"]), name
            tensors[name] = {
                "dtype": dtype,
                "shape": list(info["shape"]),
                "hex": bytes(info["data"]).hex(),
                "values": values_of(dtype, arr),
            }
    return {"metadata": metadata, "tensors": tensors, "sha256": hashlib.sha256(data).hexdigest()}


def spec(dtype_name: str, arr: np.ndarray, keep: list):
    """A tensor for serialize_file across package versions (TensorSpec pointers in new ones, dicts before)."""
    arr = np.array(arr, order="C")  # a copy; not ascontiguousarray, which turns a 0-d scalar into shape (1,)
    keep.append(arr)  # the pointer must stay valid until serialization is done
    if hasattr(safetensors, "TensorSpec"):
        return safetensors.TensorSpec(
            dtype=dtype_name, shape=list(arr.shape), data_ptr=arr.ctypes.data, data_len=arr.nbytes
        )
    return {"dtype": dtype_name, "shape": list(arr.shape), "data": arr.tobytes()}


def write(directory: str) -> dict:
    rng = np.random.default_rng(1234)
    numpy_path = os.path.join(directory, "numpy.safetensors")
    save_file(
        {
            "f32": rng.standard_normal((3, 4)).astype(np.float32),
            "f16": np.array([1.0, -2.5, 65504, 6e-8, np.inf, -0.0], dtype=np.float16).reshape(2, 3),
            "f64": np.array([np.pi, -1e300], dtype=np.float64),
            "i32": np.array([-(2**31), 2**31 - 1, 0, 7], dtype=np.int32),
            "i64": np.array([-(2**63), 2**63 - 1, 2**53 + 1], dtype=np.int64),
            "u8": np.arange(5, dtype=np.uint8),
            "bool": np.array([[True, False], [False, True]]),
            "scalar": np.array(1.5, dtype=np.float32),
            "empty": np.zeros((0, 3), dtype=np.int32),
        },
        numpy_path,
        metadata={"format": "np", "written_by": "python"},
    )
    keep: list = []
    bf16 = np.array([0x3F80, 0xC040, 0x7F80, 0xFF80, 0x0001, 0x7FC0, 0x4049], dtype="<u2")
    raw_path = os.path.join(directory, "raw.safetensors")
    safetensors.serialize_file(
        {
            "bf16": spec("bfloat16", bf16, keep),
            "bf16_scalar": spec("bfloat16", np.array(0x4000, dtype="<u2"), keep),
            "bf16_empty": spec("bfloat16", np.zeros((2, 0), dtype="<u2"), keep),
            "f32": spec("float32", np.array([0.1, -0.0], dtype=np.float32), keep),
            "i64": spec("int64", np.array([-1, 1 << 62], dtype=np.int64), keep),
        },
        raw_path,
        metadata={"kind": "raw"},
    )
    return {"numpy": dict(describe(numpy_path), path=numpy_path), "raw": dict(describe(raw_path), path=raw_path)}


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "check":
        out = {"python": sys.version.split()[0], "safetensors": safetensors.__version__, "numpy": np.__version__}
    elif mode == "read":
        out = describe(sys.argv[2])
    elif mode == "write":
        out = write(sys.argv[2])
    elif mode == "f16round":
        bits = np.array(json.load(sys.stdin), dtype=np.uint32)
        with np.errstate(all="ignore"):  # overflow to inf is one of the cases under test
            out = bits.view(np.float32).astype(np.float16).view(np.uint16).tolist()
    else:
        sys.exit(f"usage: {sys.argv[0]} check | read FILE | write DIR | f16round")
    json.dump(out, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
