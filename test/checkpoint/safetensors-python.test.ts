/**
 * Interoperability with the reference implementation: files we write must load in Python `safetensors`
 * (Rust core) with identical dtypes, shapes and bytes, and files Python writes must load in ours. Needs
 * python3 with `safetensors` and `numpy` (CI installs them); without them these tests FAIL rather than skip,
 * so a missing dependency can never pass as "compatible". Set PYTHON to use another interpreter.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  createReadStream,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { f32ToF16Bits, fromFloat32, toFloat32, typedView } from '../../checkpoint/dtype';
import { decodeSafetensors, readSafetensorsStream, safetensorsChunks } from '../../checkpoint/safetensors';
import { bytesOf, type NamedTensors, type Tensor } from '../../checkpoint/tensors';

const PYTHON = process.env.PYTHON ?? 'python3';
const SCRIPT = join(__dirname, '..', 'python', 'st_roundtrip.py');

interface PyTensor {
  dtype: string;
  shape: number[];
  hex: string;
  values: (number | string | boolean)[];
}
interface PyFile {
  metadata: Record<string, string>;
  tensors: Record<string, PyTensor>;
  sha256: string;
  path: string;
}

function python(args: string[], input?: string): unknown {
  const res = spawnSync(PYTHON, [SCRIPT, ...args], { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (res.error || res.status !== 0) {
    throw new Error(`${PYTHON} ${SCRIPT} ${args[0]} failed: ${res.error?.message ?? res.stderr}`);
  }
  return JSON.parse(res.stdout);
}

/** Our reading of a tensor's values, in the same form the Python script prints. */
function ourValues(t: Tensor): (number | string | boolean)[] {
  const bytes = bytesOf(t.data).slice(); // aligned copy
  if (t.dtype === 'F64') return Array.from(new Float64Array(bytes.buffer));
  if (t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16') return Array.from(toFloat32(t));
  if (t.dtype === 'BOOL') return Array.from(bytes, (b) => b !== 0);
  return Array.from(typedView(t.dtype, bytes.buffer) as unknown as ArrayLike<number | bigint>, (v) =>
    String(v),
  );
}

function pyValues(values: PyTensor['values']): (number | string | boolean)[] {
  const special: Record<string, number> = { nan: NaN, inf: Infinity, '-inf': -Infinity };
  return values.map((v) => (typeof v === 'string' && v in special ? (special[v] as number) : v));
}

function assertSame(name: string, ours: Tensor | undefined, py: PyTensor | undefined): void {
  assert.ok(ours && py, `${name} missing (ours: ${!!ours}, python: ${!!py})`);
  assert.equal(py.dtype, ours.dtype, name);
  assert.deepEqual(py.shape, [...ours.shape], name);
  assert.equal(py.hex, Buffer.from(bytesOf(ours.data)).toString('hex'), `${name} bytes`);
  assert.deepEqual(pyValues(py.values), ourValues(ours), `${name} values`); // strict: NaN = NaN, -0 ≠ 0
}

let dir: string;
before(() => {
  try {
    python(['check']);
  } catch (err) {
    throw new Error(
      'safetensors interoperability tests need python3 with the `safetensors` and `numpy` packages ' +
        `(pip install safetensors numpy; or set PYTHON=/path/to/python). ${(err as Error).message}`,
    );
  }
  dir = mkdtempSync(join(tmpdir(), 'st-python-'));
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('safetensors interoperability with Python', () => {
  it('files we write load in Python with identical dtypes, shapes, bytes and values', () => {
    const tensors: NamedTensors = {
      f32: { dtype: 'F32', shape: [2, 3], data: new Float32Array([0, -0, 1.5, -1e-30, 3.4e38, 1 / 3]) },
      f16: fromFloat32(
        Float32Array.from([1, 1 + 2 ** -11, 65520, 2 ** -24, -2.5, 1e-8, NaN, -Infinity]),
        [2, 4],
        'F16',
      ),
      bf16: fromFloat32(Float32Array.from([1, Math.PI, -3e38, 1e-40, NaN, Infinity]), [3, 2], 'BF16'),
      f64: { dtype: 'F64', shape: [2], data: new Float64Array([Math.E, -1e-300]) },
      i64: {
        dtype: 'I64',
        shape: [3],
        data: new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n]),
      },
      u64: { dtype: 'U64', shape: [2], data: new BigUint64Array([2n ** 64n - 1n, 0n]) },
      i32: { dtype: 'I32', shape: [3], data: new Int32Array([-(2 ** 31), 2 ** 31 - 1, 5]) },
      u32: { dtype: 'U32', shape: [1], data: new Uint32Array([2 ** 32 - 1]) },
      i16: { dtype: 'I16', shape: [2], data: new Int16Array([-32768, 32767]) },
      u16: { dtype: 'U16', shape: [1], data: new Uint16Array([65535]) },
      i8: { dtype: 'I8', shape: [2], data: new Int8Array([-128, 127]) },
      u8: { dtype: 'U8', shape: [3], data: new Uint8Array([0, 128, 255]) },
      bool: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
      scalar: { dtype: 'F32', shape: [], data: new Float32Array([2.5]) },
      empty: { dtype: 'I32', shape: [0, 3], data: new Int32Array(0) },
      empty_bf16: { dtype: 'BF16', shape: [0], data: new Uint16Array(0) },
    };
    const metadata = { format: 'pt', step: '12', note: 'ünïcode ✓' };
    const path = join(dir, 'ours.safetensors');
    const fd = openSync(path, 'w');
    const { totalBytes, chunks } = safetensorsChunks(tensors, metadata);
    for (const chunk of chunks) writeSync(fd, chunk);
    closeSync(fd);
    assert.equal(statSync(path).size, totalBytes);

    const py = python(['read', path]) as PyFile;
    assert.deepEqual(py.metadata, metadata);
    assert.deepEqual(Object.keys(py.tensors).sort(), Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) assertSame(name, t, py.tensors[name]);
  });

  it('files Python writes (numpy save_file and raw serialize_file with BF16) load in ours', async () => {
    const written = python(['write', dir]) as Record<'numpy' | 'raw', PyFile>;
    const expectedNames = {
      numpy: ['bool', 'empty', 'f16', 'f32', 'f64', 'i32', 'i64', 'scalar', 'u8'],
      raw: ['bf16', 'bf16_empty', 'bf16_scalar', 'f32', 'i64'],
    };
    for (const kind of ['numpy', 'raw'] as const) {
      const py = written[kind];
      const size = statSync(py.path).size;
      const read = await readSafetensorsStream(createReadStream(py.path, { highWaterMark: 1000 }), size, {
        file: py.path,
        expectedSha256: py.sha256,
      });
      assert.equal(read.sha256, py.sha256);
      assert.deepEqual(read.metadata, py.metadata);
      assert.deepEqual(Object.keys(read.tensors).sort(), expectedNames[kind]);
      assert.deepEqual(Object.keys(py.tensors).sort(), expectedNames[kind]);
      for (const name of expectedNames[kind])
        assertSame(`${kind}/${name}`, read.tensors[name], py.tensors[name]);
      const decoded = decodeSafetensors(readFileSync(py.path), py.path);
      assert.deepEqual(decoded.tensors, read.tensors);
    }
    assert.deepEqual(written.raw.tensors['bf16_scalar']?.shape, []);
    assert.deepEqual(written.numpy.tensors['empty']?.shape, [0, 3]);
  });

  it('float32 → float16 rounding matches numpy bit for bit', () => {
    let seed = 42;
    const next = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0);
    const patterns: number[] = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0x00000001];
    for (let b = 0x33000000; b <= 0x33800000; b += 0x10000) patterns.push(b); // around half the smallest subnormal
    for (let i = 0; i < 20_000; i++) patterns.push(next());
    // Half of the random ones land in float16's range, where the interesting rounding happens.
    for (let i = 0; i < 20_000; i++)
      patterns.push(((next() % (0x47800000 - 0x33000000)) + 0x33000000) | (i % 2 ? 0x80000000 : 0));
    const numpyBits = python(['f16round'], JSON.stringify(patterns.map((b) => b >>> 0))) as number[];
    const f32 = new Float32Array(new Uint32Array(patterns).buffer);
    const isNaN16 = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    patterns.forEach((b, i) => {
      const ours = f32ToF16Bits(f32[i] as number);
      const theirs = numpyBits[i] as number;
      // NaN payloads may differ (we force a quiet NaN); NaN-ness must not.
      if (isNaN16(theirs)) assert.ok(isNaN16(ours), `0x${(b >>> 0).toString(16)}: expected NaN`);
      else
        assert.equal(
          ours,
          theirs,
          `0x${(b >>> 0).toString(16)}: ours 0x${ours.toString(16)}, numpy 0x${theirs.toString(16)}`,
        );
    });
  });
});
