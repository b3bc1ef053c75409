"""Python safetensors (numpy) contender for bench/io.ts.

Builds the very same tensors as the Node side by reading them out of the raw file the benchmark wrote (a
valid safetensors file: names, shapes and bytes), then times, inside this process:
  --mode save: safetensors.numpy.save_file to OUT + os.fsync of the written file
  --mode load: safetensors.numpy.load_file of OUT, once with the page cache dropped (when --drop), once warm;
               then (untimed) checks that it returned exactly the raw file's tensors.
Interpreter start-up and building the input arrays are not timed. Prints one JSON line.

Usage: python3 st_io.py --mode save|load --raw RAW --out OUT [--drop [--settle SECONDS]]
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
    ap.add_argument("--mode", choices=["save", "load"], required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--drop", action="store_true")
    ap.add_argument("--settle", type=float, default=1.0)
    args = ap.parse_args()

    if args.mode == "save":
        tensors = read_tensors(args.raw)
        gc.collect()
        dropped = drop_caches(args.drop, args.settle)
        t0 = time.perf_counter()
        save_file(tensors, args.out)
        fd = os.open(args.out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        result = {"save_s": time.perf_counter() - t0}
    else:
        dropped = drop_caches(args.drop, args.settle)
        t0 = time.perf_counter()
        loaded = load_file(args.out)
        load_cold_s = time.perf_counter() - t0
        del loaded
        gc.collect()
        t0 = time.perf_counter()
        loaded = load_file(args.out)
        load_warm_s = time.perf_counter() - t0
        # Untimed: the file holds exactly the tensors of the raw file.
        tensors = read_tensors(args.raw)
        same = set(loaded) == set(tensors) and all(np.array_equal(loaded[k], tensors[k]) for k in tensors)
        result = {"load_cold_s": load_cold_s, "load_warm_s": load_warm_s, "roundtrip_equal": bool(same)}
    result.update({"file_bytes": os.path.getsize(args.out), "dropped": dropped})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
