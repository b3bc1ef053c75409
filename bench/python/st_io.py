"""Python safetensors (numpy) contender for bench/io.ts.

Builds the very same tensors as the Node side by reading them out of the raw file the benchmark wrote (a
valid safetensors file: names, shapes and bytes), then times, inside this process:
  save: safetensors.numpy.save_file + os.fsync of the written file
  load: safetensors.numpy.load_file, once with the page cache dropped (when --drop) and once warm.
Interpreter start-up and building the input arrays are not timed. Prints one JSON line.

Usage: python3 st_io.py --raw RAW --out OUT [--drop [--settle SECONDS]]
"""

import argparse
import gc
import json
import os
import struct
import subprocess
import time

import numpy as np
from safetensors.numpy import load_file, save_file

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32, "I64": np.int64}


def drop_caches(enabled, settle_s):
    """sync + drop the page cache, then pause as the Node side does (the VM keeps reclaiming for a while)."""
    if not enabled:
        subprocess.run(["sync"], check=False)
        return False
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    time.sleep(settle_s)
    return True


def read_tensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    tensors = {}
    # One array per tensor, read straight from the file: no big temporary is freed just before the timed save.
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = np.dtype(DTYPES[info["dtype"]])
        count = (end - begin) // dtype.itemsize
        tensors[name] = np.fromfile(path, dtype=dtype, count=count, offset=8 + n + begin).reshape(info["shape"])
    return tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--drop", action="store_true")
    ap.add_argument("--settle", type=float, default=1.0)
    args = ap.parse_args()

    tensors = read_tensors(args.raw)
    nbytes = sum(t.nbytes for t in tensors.values())
    gc.collect()

    dropped = drop_caches(args.drop, args.settle)
    t0 = time.perf_counter()
    save_file(tensors, args.out)
    fd = os.open(args.out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    save_s = time.perf_counter() - t0

    drop_caches(args.drop, args.settle)
    t0 = time.perf_counter()
    loaded = load_file(args.out)
    load_cold_s = time.perf_counter() - t0
    same = set(loaded) == set(tensors) and all(np.array_equal(loaded[k], tensors[k]) for k in tensors)
    del loaded
    gc.collect()

    t0 = time.perf_counter()
    loaded = load_file(args.out)
    load_warm_s = time.perf_counter() - t0
    del loaded

    print(
        json.dumps(
            {
                "save_s": save_s,
                "load_cold_s": load_cold_s,
                "load_warm_s": load_warm_s,
                "file_bytes": os.path.getsize(args.out),
                "tensor_bytes": nbytes,
                "dropped": dropped,
                "roundtrip_equal": bool(same),
            }
        )
    )


if __name__ == "__main__":
    main()
