"""Checkpoint I/O of two builds in one run (BENCHMARKS.md, issue 16): raw node write + fsync, saveCheckpoint of
this checkout and of an older one, Python save_file + fsync; then loads (verify on for both builds, verify off,
raw fs.readFile, Python load_file), cold and warm. Every contender runs in a fresh process
(bench/lib/io-child.ts of its build, bench/python/st_io.py), in rotating order; as root, the page cache is
dropped and the machine left 1 s before every timed write and cold read.

Usage: OLD=<an older checkout with node_modules> [ROUNDS=5] [TENSORS=32] python3 bench/python/io_ab.py
e.g. mkdir /tmp/old && git archive 44d9f55 | tar -x -C /tmp/old && ln -s $PWD/node_modules /tmp/old/
"""
import json, os, shutil, subprocess, statistics, sys, tempfile

import numpy as np
from safetensors.numpy import save_file

ROUNDS = int(os.environ.get('ROUNDS', 5))
NEW = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OLD = os.environ['OLD']
WORK = tempfile.mkdtemp(prefix='bench-io-ab-')
SRC = os.path.join(WORK, 'source.safetensors')
# Deterministic f32 tensors of 8 MiB each (256 MiB by default).
save_file({f'b.{i}': np.sin(np.arange(2097152, dtype=np.float32) + i * 7) for i in range(int(os.environ.get('TENSORS', 32)))}, SRC)
def node(tree, mode, target):
    out = subprocess.run(['node', '--import', 'tsx', f'{tree}/bench/lib/io-child.ts', mode, SRC, target, '1', '1000'],
                         cwd=tree, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)
def py(mode, target):
    out = subprocess.run(['python3', f'{NEW}/bench/python/st_io.py', '--mode', mode, '--raw', SRC, '--out', target, '--drop', '--settle', '1'],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)
res = {}
def add(k, v): res.setdefault(k, []).append(v)
for r in range(ROUNDS):
    for p in [*(os.path.join(WORK, n) for n in ('raw', 'old', 'new', 'py'))]:
        shutil.rmtree(p, ignore_errors=True)
        if os.path.exists(p): os.remove(p)
    writers = [
        lambda: add('save raw write+fsync', node(NEW, 'raw-write', os.path.join(WORK, 'raw'))['s']),
        lambda: add('save old build', node(OLD, 'ours-save', os.path.join(WORK, 'old'))['s']),
        lambda: add('save this build', node(NEW, 'ours-save', os.path.join(WORK, 'new'))['s']),
        lambda: add('save python', py('save', os.path.join(WORK, 'py'))['save_s']),
    ]
    for k in range(len(writers)): writers[(k + r) % len(writers)]()
    def rd(key, res_):
        add(f'load cold {key}', res_['cold_s' if 'cold_s' in res_ else 'load_cold_s']); add(f'load warm {key}', res_['warm_s' if 'warm_s' in res_ else 'load_warm_s'])
    readers = [
        lambda: rd('raw readFile', node(NEW, 'raw-read', os.path.join(WORK, 'raw'))),
        lambda: rd('old build verify on', node(OLD, 'ours-load-on', os.path.join(WORK, 'old'))),
        lambda: rd('this build verify on', node(NEW, 'ours-load-on', os.path.join(WORK, 'new'))),
        lambda: rd('this build verify off', node(NEW, 'ours-load-off', os.path.join(WORK, 'new'))),
        lambda: rd('python load_file', py('load', os.path.join(WORK, 'py'))),
    ]
    for k in range(len(readers)): readers[(k + r) % len(readers)]()
    print(f'round {r+1} done, load {os.getloadavg()[0]:.1f}', file=sys.stderr, flush=True)
print(f'{"contender":36} median   best   runs')
for k, v in res.items():
    print(f'{k:36} {statistics.median(v):.3f}  {min(v):.3f}  {", ".join(f"{x:.3f}" for x in v)}')
shutil.rmtree(WORK, ignore_errors=True)
