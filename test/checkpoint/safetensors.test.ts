import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  fromFloat32,
  toFloat32,
} from '../../checkpoint/dtype';
import {
  CheckpointError,
  IntegrityError,
  SafetensorsError,
  type SafetensorsFault,
} from '../../checkpoint/errors';
import {
  MAX_HEADER_BYTES,
  decodeSafetensors,
  encodeSafetensors,
  readSafetensorsHeader,
  readSafetensorsStream,
  safetensorsChunks,
} from '../../checkpoint/safetensors';
import type { Store } from '../../checkpoint/store';
import { DTYPE_BYTES, bytesOf, type DType, type NamedTensors, type Tensor } from '../../checkpoint/tensors';

const FILE = 'bad.safetensors';

/** A deterministic PRNG (mulberry32): failures reproduce from the seed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(n: number, rand: () => number): Uint8Array {
  return Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
}

/** One tensor of every dtype, plus a scalar and empty tensors, with recognisable bytes. */
function allDtypes(): NamedTensors {
  const rand = rng(7);
  const out: NamedTensors = {};
  for (const dtype of Object.keys(DTYPE_BYTES) as DType[]) {
    const bytes = randomBytes(6 * DTYPE_BYTES[dtype], rand);
    if (dtype === 'BOOL') bytes.forEach((b, i) => (bytes[i] = b & 1));
    out[`t.${dtype}`] = { dtype, shape: [2, 3], data: bytes };
  }
  out['scalar'] = { dtype: 'F64', shape: [], data: new Float64Array([Math.PI]) };
  out['empty'] = { dtype: 'I32', shape: [0], data: new Int32Array(0) };
  out['empty3d'] = { dtype: 'BF16', shape: [3, 0, 2], data: new Uint16Array(0) };
  out['odd'] = { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) }; // puts later tensors off 4-byte alignment
  return out;
}

function assertSameTensors(actual: NamedTensors, expected: NamedTensors): void {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort());
  for (const [name, t] of Object.entries(expected)) {
    const got = actual[name] as Tensor;
    assert.equal(got.dtype, t.dtype, name);
    assert.deepEqual(got.shape, t.shape, name);
    assert.deepEqual(Buffer.from(bytesOf(got.data)), Buffer.from(bytesOf(t.data)), name);
    assert.equal(got.data.byteOffset % DTYPE_BYTES[got.dtype], 0, `${name} is aligned`);
  }
}

async function* chunked(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** A file with a hand-written header (no padding added) and raw data, for malformed cases. */
function rawFile(header: string | object, data: Uint8Array | number = 0, claimed?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + body.length);
  new DataView(out.buffer).setBigUint64(0, claimed ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(body, 8 + json.length);
  return out;
}

function isFault(reason: SafetensorsFault, extra: { tensor?: string; field?: string } = {}) {
  return (err: unknown) => {
    assert.ok(err instanceof SafetensorsError, `expected SafetensorsError, got ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    assert.equal(err.file, FILE);
    assert.equal(err.exitCode, 1);
    for (const [k, v] of Object.entries(extra)) assert.equal(err[k as 'tensor' | 'field'], v, err.message);
    return true;
  };
}

/** The same bytes must fail the same way whether decoded in memory or streamed in awkward chunks. */
async function assertFault(
  bytes: Uint8Array,
  reason: SafetensorsFault,
  extra: { tensor?: string; field?: string } = {},
) {
  assert.throws(() => decodeSafetensors(bytes, FILE), isFault(reason, extra));
  await assert.rejects(
    readSafetensorsStream(chunked(bytes, 5), bytes.length, { file: FILE }),
    isFault(reason, extra),
  );
}

const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

describe('safetensors writer and readers', () => {
  it('round-trips every dtype, scalars, empty tensors and metadata (decode and stream)', async () => {
    const tensors = allDtypes();
    const metadata = { format: 'pt', step: '42', ü: '层' };
    const bytes = encodeSafetensors(tensors, metadata);
    const decoded = decodeSafetensors(bytes);
    assertSameTensors(decoded.tensors, tensors);
    assert.deepEqual(decoded.metadata, metadata);
    assert.ok(decoded.tensors['t.F32']?.data instanceof Float32Array);
    assert.ok(decoded.tensors['t.I64']?.data instanceof BigInt64Array);
    assert.equal((decoded.tensors['scalar']?.data as Float64Array)[0], Math.PI);
    for (const size of [1, 3, 8, 64, 1 << 20]) {
      const read = await readSafetensorsStream(chunked(bytes, size), bytes.length, { file: FILE });
      assertSameTensors(read.tensors, tensors);
      assert.deepEqual(read.metadata, metadata);
      assert.equal(read.sha256, createHash('sha256').update(bytes).digest('hex'));
      assert.deepEqual(read.tensorInfos, decoded.tensorInfos);
    }
  });

  it('writes the spec layout: u64 length, space-padded header, contiguous data in name order', () => {
    const tensors: NamedTensors = {
      b: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
      a: { dtype: 'U8', shape: [], data: new Uint8Array([9]) },
    };
    const { totalBytes, chunks } = safetensorsChunks(tensors);
    const parts = [...chunks];
    const head = parts[0] as Uint8Array;
    const n = Number(new DataView(head.buffer).getBigUint64(0, true));
    assert.equal(n % 8, 0);
    assert.equal(head.length, 8 + n);
    const json =
      '{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}';
    assert.equal(Buffer.from(head.subarray(8)).toString(), json.padEnd(n, ' '));
    // Data chunks are views over the tensors' own memory, not copies.
    assert.equal(parts[1]?.buffer, tensors['a']?.data.buffer);
    assert.equal(parts[2]?.buffer, tensors['b']?.data.buffer);
    assert.equal(totalBytes, 8 + n + 9);
    const all = encodeSafetensors(tensors, {});
    assert.match(Buffer.from(all).toString('latin1'), /^.{8}\{"__metadata__":\{\},"a":/s);
  });

  it('is deterministic: same tensors in any insertion order give identical bytes', () => {
    const tensors = allDtypes();
    const reversed = Object.fromEntries(Object.entries(tensors).reverse());
    const a = encodeSafetensors(tensors, { x: '1', a: '2' });
    assert.deepEqual(encodeSafetensors(reversed, { a: '2', x: '1' }), a);
    assert.deepEqual(encodeSafetensors(tensors, { x: '1', a: '2' }), a);
  });

  it('keeps awkward names as own data properties ("__proto__", numeric, unicode)', () => {
    const t: Tensor = { dtype: 'I8', shape: [1], data: new Int8Array([-5]) };
    const tensors = JSON.parse('{"__proto__":0,"10":0,"2":0,"层.0/ä":0,"constructor":0}') as Record<
      string,
      unknown
    >;
    for (const k of Object.keys(tensors)) Object.defineProperty(tensors, k, { value: t, enumerable: true });
    const decoded = decodeSafetensors(encodeSafetensors(tensors as NamedTensors));
    assert.deepEqual(Object.keys(decoded.tensors).sort(), Object.keys(tensors).sort());
    assert.equal(Object.getPrototypeOf(decoded.tensors), Object.prototype);
    assert.equal(decoded.tensorInfos.map((i) => i.name).join(' '), '10 2 __proto__ constructor 层.0/ä');
  });

  it('rejects invalid tensors and metadata at write time, naming the tensor', () => {
    const bad = (
      tensors: NamedTensors,
      reason: SafetensorsFault,
      tensor?: string,
      metadata?: Record<string, string>,
    ) =>
      assert.throws(
        () => safetensorsChunks(tensors, metadata),
        (e: unknown) => e instanceof SafetensorsError && e.reason === reason && e.tensor === tensor,
      );
    const ok: Tensor = { dtype: 'F32', shape: [1], data: new Float32Array(1) };
    bad({ w: { ...ok, dtype: 'F8' as DType } }, 'unknown-dtype', 'w');
    bad({ w: { ...ok, shape: [-1] } }, 'invalid-shape', 'w');
    bad({ w: { ...ok, shape: [0.5] } }, 'invalid-shape', 'w');
    bad({ w: { ...ok, shape: [2] } }, 'shape-mismatch', 'w');
    bad({ w: { ...ok, data: [1] as unknown as Float32Array } }, 'invalid-tensor', 'w');
    bad({ __metadata__: ok }, 'invalid-tensor', '__metadata__');
    bad({ w: ok }, 'invalid-metadata', undefined, { k: 3 as unknown as string });
  });

  it('streams with select and onTensor: skipped tensors are hashed but not kept', async () => {
    const tensors = allDtypes();
    const bytes = encodeSafetensors(tensors);
    const seen: string[] = [];
    const res = await readSafetensorsStream(chunked(bytes, 7), bytes.length, {
      file: FILE,
      expectedSha256: createHash('sha256').update(bytes).digest('hex').toUpperCase(),
      select: (name) => name !== 't.F64',
      onTensor: async (name, t) => {
        seen.push(name);
        assert.equal(t.dtype, tensors[name]?.dtype);
        await new Promise((r) => setImmediate(r));
      },
    });
    assert.deepEqual(res.tensors, {});
    assert.deepEqual(
      seen.sort(),
      Object.keys(tensors)
        .filter((n) => n !== 't.F64')
        .sort(),
    );
    const kept = await readSafetensorsStream(chunked(bytes, 7), bytes.length, {
      file: FILE,
      select: (n) => n === 'odd',
    });
    assert.deepEqual(Object.keys(kept.tensors), ['odd']);
    assert.equal(kept.tensorInfos.length, Object.keys(tensors).length);
  });

  it('readSafetensorsHeader reads only the header through readRange', async () => {
    const bytes = encodeSafetensors(allDtypes(), { a: 'b' });
    const ranges: [number, number][] = [];
    const store = {
      location: 'mem://',
      stat: async () => ({ key: 'x', bytes: bytes.length, mtimeMs: 0 }),
      readRange: async (_key: string, offset: number, length: number) => {
        ranges.push([offset, length]);
        return Buffer.from(bytes.subarray(offset, offset + length));
      },
    } as unknown as Store;
    const h = await readSafetensorsHeader(store, 'x');
    assert.deepEqual(h.metadata, { a: 'b' });
    assert.equal(h.tensorInfos.length, Object.keys(allDtypes()).length);
    assert.deepEqual(ranges, [
      [0, 8],
      [8, h.headerLength],
    ]);
  });

  it('round-trips random tensor sets (property)', () => {
    const dtypes = Object.keys(DTYPE_BYTES) as DType[];
    const tensorArb = fc
      .tuple(fc.constantFrom(...dtypes), fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }))
      .chain(([dtype, shape]) => {
        const n = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
        return fc.uint8Array({ minLength: n, maxLength: n }).map((data): Tensor => ({ dtype, shape, data }));
      });
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 8 }), tensorArb, { maxKeys: 6 }), (tensors) => {
        delete tensors['__metadata__'];
        assertSameTensors(decodeSafetensors(encodeSafetensors(tensors)).tensors, tensors);
      }),
      { numRuns: 150, seed: 1234 },
    );
  });
});

describe('dtype conversion', () => {
  const bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0] as number;
  const fromBits = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0] as number;

  it('every finite/inf 16-bit pattern survives widen → narrow; NaN stays NaN', () => {
    for (let b = 0; b < 65536; b++) {
      const h = f16BitsToF32(b);
      if (Number.isNaN(h))
        assert.ok((f32ToF16Bits(h) & 0x7c00) === 0x7c00 && (f32ToF16Bits(h) & 0x3ff) !== 0);
      else assert.equal(f32ToF16Bits(h), b);
      const bf = bf16BitsToF32(b);
      if (Number.isNaN(bf)) assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(bf))));
      else assert.equal(f32ToBf16Bits(bf), b);
    }
  });

  it('bf16 rounds to nearest, ties to even; inf and NaN preserved', () => {
    assert.equal(f32ToBf16Bits(fromBits(0x3f808000)), 0x3f80); // 1 + 2^-8: tie → even (down)
    assert.equal(f32ToBf16Bits(fromBits(0x3f818000)), 0x3f82); // tie → even (up)
    assert.equal(f32ToBf16Bits(fromBits(0x3f808001)), 0x3f81); // just above the tie
    assert.equal(f32ToBf16Bits(fromBits(0x3f807fff)), 0x3f80); // just below the tie
    assert.equal(f32ToBf16Bits(fromBits(0x7f7fffff)), 0x7f80); // max float32 overflows to inf
    assert.equal(f32ToBf16Bits(Infinity), 0x7f80);
    assert.equal(f32ToBf16Bits(-Infinity), 0xff80);
    assert.equal(f32ToBf16Bits(-0), 0x8000);
    assert.equal(f32ToBf16Bits(fromBits(0x00000001)), 0x0000); // smallest subnormal rounds to +0
    for (const nan of [NaN, fromBits(0x7f800001), fromBits(0xff800001), fromBits(0x7fc00000)]) {
      assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(nan))), `NaN ${bits(nan).toString(16)}`);
    }
  });

  it('f16 rounds to nearest even, with subnormals, overflow to inf and NaN', () => {
    const cases: [number, number][] = [
      [1 + 2 ** -11, 0x3c00], // tie → even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // tie → even (up)
      [65504, 0x7bff], // max finite
      [65519, 0x7bff],
      [65520, 0x7c00], // tie between max finite (odd) and 2^16 → inf
      [1e6, 0x7c00],
      [-1e6, 0xfc00],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // tie → even zero
      [3 * 2 ** -26, 0x0001], // 0.75 ulp → 1
      [3 * 2 ** -25, 0x0002], // 1.5 ulp tie → 2
      [1023 * 2 ** -24, 0x03ff], // largest subnormal
      [2 ** -14 - 2 ** -25, 0x0400], // tie between 0x3ff (odd) and smallest normal
      [-(2 ** -24), 0x8001],
      [1e-10, 0x0000],
      [-1e-10, 0x8000],
      [Infinity, 0x7c00],
      [-0, 0x8000],
    ];
    for (const [x, want] of cases) assert.equal(f32ToF16Bits(x), want, `f16(${x})`);
    assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
    assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(fromBits(0x7f800001)))));
  });

  it('agrees with a brute-force nearest-even reference on random inputs', () => {
    // Reference: the non-negative finite values in bit order are increasing; pick the nearest of the two
    // neighbours by exact (double) distance, ties to the even bit pattern; past the top, "inf" acts as 2^(emax+1).
    const reference = (table: Float64Array, top: number) => (x: number) => {
      const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
      const a = Math.abs(x);
      let lo = 0;
      let hi = table.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if ((table[mid] as number) <= a) lo = mid;
        else hi = mid - 1;
      }
      const up = lo + 1 < table.length ? (table[lo + 1] as number) : top;
      const dLo = a - (table[lo] as number);
      const dUp = up - a;
      return sign | (dLo < dUp || (dLo === dUp && lo % 2 === 0) ? lo : lo + 1);
    };
    const f16Ref = reference(
      Float64Array.from({ length: 0x7c00 }, (_, i) => f16BitsToF32(i)),
      65536,
    );
    const bf16Ref = reference(
      Float64Array.from({ length: 0x7f80 }, (_, i) => bf16BitsToF32(i)),
      2 ** 128,
    );
    const rand = rng(99);
    for (let i = 0; i < 50_000; i++) {
      const any = fromBits(Math.floor(rand() * 2 ** 32));
      if (!Number.isNaN(any))
        assert.equal(f32ToBf16Bits(any), bf16Ref(any), `bf16 ${bits(any).toString(16)}`);
      // f16-range inputs, half of them exact midpoints between neighbours
      const h = Math.floor(rand() * 0x7c00);
      const mid = Math.fround((f16BitsToF32(h) + (h + 1 < 0x7c00 ? f16BitsToF32(h + 1) : 65536)) / 2);
      const x = i % 2 ? mid : Math.fround(rand() * 2 ** (Math.floor(rand() * 44) - 27));
      assert.equal(f32ToF16Bits(x), f16Ref(x), `f16 ${x}`);
      assert.equal(f32ToF16Bits(-x), f16Ref(-x), `f16 ${-x}`);
    }
  });

  it('toFloat32 widens every dtype; aligned F32 is zero-copy, unaligned is copied', () => {
    const cases: [Tensor, number[]][] = [
      [{ dtype: 'F64', shape: [2], data: new Float64Array([0.5, -2]) }, [0.5, -2]],
      [{ dtype: 'I64', shape: [2], data: new BigInt64Array([-3n, 1n << 40n]) }, [-3, 2 ** 40]],
      [{ dtype: 'U64', shape: [1], data: new BigUint64Array([2n ** 63n]) }, [2 ** 63]],
      [{ dtype: 'I32', shape: [2], data: new Int32Array([-7, 7]) }, [-7, 7]],
      [{ dtype: 'U32', shape: [1], data: new Uint32Array([4e9]) }, [Math.fround(4e9)]],
      [{ dtype: 'I16', shape: [1], data: new Int16Array([-300]) }, [-300]],
      [{ dtype: 'U16', shape: [1], data: new Uint16Array([65535]) }, [65535]],
      [{ dtype: 'I8', shape: [1], data: new Int8Array([-128]) }, [-128]],
      [{ dtype: 'U8', shape: [1], data: new Uint8Array([255]) }, [255]],
      [{ dtype: 'BOOL', shape: [3], data: new Uint8Array([0, 1, 2]) }, [0, 1, 1]],
      [{ dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) }, [1, -2]],
      [{ dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0xc040]) }, [1, -3]],
    ];
    for (const [t, want] of cases) assert.deepEqual([...toFloat32(t)], want, t.dtype);
    const f32 = new Float32Array([1, 2, 3]);
    assert.equal(
      toFloat32({ dtype: 'F32', shape: [3], data: new Uint8Array(f32.buffer) }).buffer,
      f32.buffer,
    );
    const unaligned = new Uint8Array(13);
    unaligned.set(new Uint8Array(f32.buffer), 1);
    assert.deepEqual([...toFloat32({ dtype: 'F32', shape: [3], data: unaligned.subarray(1) })], [1, 2, 3]);
    assert.throws(() => toFloat32({ dtype: 'F32', shape: [4], data: f32 }), SafetensorsError);
  });

  it('fromFloat32 converts and copies; rejects a shape that does not fit', () => {
    const v = new Float32Array([1, 1 + 2 ** -11, 65520]);
    assert.deepEqual([...(fromFloat32(v, [3], 'F16').data as Uint16Array)], [0x3c00, 0x3c00, 0x7c00]);
    assert.deepEqual([...(fromFloat32(v, [3], 'BF16').data as Uint16Array)], [0x3f80, 0x3f80, 0x4780]);
    const f = fromFloat32(v, [1, 3], 'F32');
    assert.notEqual(f.data.buffer, v.buffer);
    assert.deepEqual(f.shape, [1, 3]);
    assert.throws(() => fromFloat32(v, [2], 'F16'), SafetensorsError);
  });
});

describe('malformed files', () => {
  it('truncated files', async () => {
    const good = encodeSafetensors(allDtypes());
    await assertFault(good.subarray(0, good.length - 1), 'truncated');
    await assertFault(good.subarray(0, 5), 'truncated');
    // The stream ends early, against the length the store reported: in the data, in the header, in the prefix.
    for (const cut of [good.length - 1, 40, 3]) {
      await assert.rejects(
        readSafetensorsStream(chunked(good.subarray(0, cut), 16), good.length, { file: FILE }),
        isFault('truncated'),
      );
    }
  });

  it('a stream longer than the stated length, and trailing bytes', async () => {
    const good = encodeSafetensors(allDtypes());
    const longer = Buffer.concat([good, Buffer.from([0, 0])]);
    await assert.rejects(
      readSafetensorsStream(chunked(longer, 16), good.length, { file: FILE }),
      isFault('length-mismatch'),
    );
    await assertFault(Buffer.concat([good, Buffer.from([0])]), 'length-mismatch');
  });

  it('bit-flipped data fails the sha256 check with an IntegrityError', async () => {
    const good = encodeSafetensors(allDtypes());
    const expected = createHash('sha256').update(good).digest('hex');
    const bad = good.slice();
    bad[bad.length - 10] = (bad[bad.length - 10] as number) ^ 0x01;
    const actual = createHash('sha256').update(bad).digest('hex');
    await assert.rejects(
      readSafetensorsStream(chunked(bad, 4096), bad.length, { file: FILE, expectedSha256: expected }),
      (e) => {
        assert.ok(e instanceof IntegrityError);
        assert.deepEqual(
          [e.file, e.field, e.expected, e.actual, e.exitCode],
          [FILE, 'sha256', expected, actual, 1],
        );
        return true;
      },
    );
    // Without the expected hash the flip is invisible: the format alone cannot catch it.
    await readSafetensorsStream(chunked(bad, 4096), bad.length, { file: FILE });
  });

  it('header lengths past the file or over 100 MB fail before allocating', async () => {
    await assertFault(rawFile('{}', 0, 1000n), 'header-past-end');
    await assertFault(rawFile('{}', 0, BigInt(MAX_HEADER_BYTES)), 'header-past-end');
    for (const claimed of [BigInt(MAX_HEADER_BYTES) + 1n, 2n ** 64n - 1n]) {
      const bytes = rawFile('{}', 0, claimed);
      const before = process.memoryUsage().arrayBuffers;
      const start = performance.now();
      // The stated file length is huge, as if the file really were that long: only the cap can stop it.
      await assert.rejects(
        readSafetensorsStream(chunked(bytes, 8), 2 ** 40, { file: FILE }),
        isFault('header-too-large'),
      );
      assert.throws(() => decodeSafetensors(bytes, FILE), isFault('header-too-large'));
      assert.ok(performance.now() - start < 200, 'fails fast');
      assert.ok(process.memoryUsage().arrayBuffers - before < 16 << 20, 'allocates nothing large');
    }
  });

  it('a header that claims a huge tensor does not allocate it before its bytes arrive', async () => {
    const header = Buffer.from(JSON.stringify({ big: entry('U8', [2 ** 31], [0, 2 ** 31]) }));
    const bytes = rawFile(header.toString());
    const before = process.memoryUsage().arrayBuffers;
    await assert.rejects(
      readSafetensorsStream(chunked(bytes, 64), bytes.length + 2 ** 31, { file: FILE }),
      isFault('truncated'),
    );
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 << 20);
  });

  // [header, data bytes, expected reason, expected error context]
  type Case = [string | object, number, SafetensorsFault, { tensor?: string; field?: string }?];
  const t0 = '{"dtype":"U8","shape":[0],"data_offsets":[0,0]}';
  const huge = 2 ** 53 - 1; // the byte count overflows a double: it must still not "match"
  // prettier-ignore
  const cases: Record<string, Case[]> = {
    'overlapping and gapped offsets': [
      [{ a: entry('F32', [2], [0, 8]), b: entry('F32', [1], [4, 8]) }, 8, 'offsets-overlap', { tensor: 'b', field: 'data_offsets' }],
      [{ a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [0, 4]) }, 4, 'offsets-overlap'],
      [{ a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [8, 12]) }, 12, 'offsets-gap', { tensor: 'b' }],
      [{ a: entry('F32', [1], [4, 8]) }, 8, 'offsets-gap', { tensor: 'a' }],
    ],
    'unknown dtypes': ['F8_E4M3', 'float32', 'f32', 7].map(
      (d): Case => [{ w: entry(d as string, [1], [0, 1]) }, 1, 'unknown-dtype', { tensor: 'w', field: 'dtype' }],
    ),
    'bad shapes': [
      ...[[-1], ['1'], [1.5], null, 3, [2 ** 53]].map(
        (shape): Case => [{ w: entry('U8', shape, [0, 1]) }, 1, 'invalid-shape', { tensor: 'w', field: 'shape' }],
      ),
      ['{"w":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', 1, 'invalid-shape', { tensor: 'w', field: 'shape' }],
    ],
    'shape/byte mismatches': [
      [{ w: entry('F32', [3], [0, 8]) }, 8, 'shape-mismatch', { tensor: 'w' }],
      [{ w: entry('U8', [huge, huge], [0, 1]) }, 1, 'shape-mismatch', { tensor: 'w' }],
    ],
    'bad tensor entries': [
      ...[[4, 0], [0], [0, -4], '0,4', [0, 2 ** 60]].map(
        (o): Case => [{ w: entry('U8', [4], o) }, 4, 'invalid-tensor', { tensor: 'w', field: 'data_offsets' }],
      ),
      ['{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1e0]}}', 1, 'invalid-tensor', { field: 'data_offsets' }],
      [{ w: { dtype: 'U8', shape: [0] } }, 0, 'invalid-tensor', { tensor: 'w', field: 'data_offsets' }],
      [{ w: { ...entry('U8', [0], [0, 0]), extra: 1 } }, 0, 'invalid-tensor', { field: 'extra' }],
      [{ w: [] }, 0, 'invalid-tensor', { tensor: 'w' }],
    ],
    'invalid JSON and header shapes': [
      ['{"a":', 0, 'invalid-json'],
      ['', 0, 'invalid-json'],
      ['{}\0\0', 0, 'invalid-json'],
      ['\ufeff{}', 0, 'invalid-json'], // a BOM
      ['[]', 0, 'invalid-header'],
      [' {}', 0, 'invalid-header'],
    ],
    'duplicate keys at any level, including escaped spellings': [
      [`{"a":${t0},"b":${t0},"a":${t0}}`, 0, 'duplicate-key', { tensor: 'a' }],
      [`{"a":${t0},"\\u0061":${t0}}`, 0, 'duplicate-key', { tensor: 'a' }],
      ['{"a":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}}', 0, 'duplicate-key', { tensor: 'a', field: 'dtype' }],
      [`{"__metadata__":{"k":"1","k":"2"},"a":${t0}}`, 0, 'duplicate-key', { field: 'k' }],
      ['{"__metadata__":{},"__metadata__":{}}', 0, 'duplicate-key'],
    ],
    'bad metadata': ['[]', 'null', '"x"', '{"k":1}', '{"k":{"n":"v"}}', '{"k":null}', '{"k":["v"]}', '{"k":1.5}'].map(
      (m): Case => [`{"__metadata__":${m}}`, 0, 'invalid-metadata'],
    ),
  };
  for (const [title, list] of Object.entries(cases)) {
    it(title, async () => {
      for (const [header, data, reason, extra] of list)
        await assertFault(rawFile(header, data), reason, extra);
    });
  }

  it('accepts what the rules allow: shared offsets of empty tensors, padding, repeated keys in other objects', () => {
    // Empty tensors may share an offset with their neighbours (the Python writer produces this).
    const ok = rawFile(
      { b: entry('F32', [1], [0, 4]), a: entry('I32', [0], [0, 0]), c: entry('I8', [0, 2], [4, 4]) },
      4,
    );
    assert.deepEqual(
      decodeSafetensors(ok).tensorInfos.map((i) => i.name),
      ['a', 'b', 'c'],
    );
    assert.deepEqual(decodeSafetensors(rawFile('{}  \n ')).tensorInfos, []);
    const meta = decodeSafetensors(rawFile(`{"__metadata__":{"a":"dtype","b":"a\\"x"},"a":${t0},"b":${t0}}`));
    assert.deepEqual(meta.metadata, { a: 'dtype', b: 'a"x' });
  });

  it('invalid UTF-8 in the header', async () => {
    const bytes = rawFile('{"\xff":0}');
    bytes[10] = 0xff; // a lone 0xff byte is not UTF-8
    await assertFault(bytes, 'invalid-json');
  });

  it('random header mutations end in success or a CheckpointError, quickly', async () => {
    const good = encodeSafetensors(allDtypes(), { step: '7', note: 'mutate me' });
    const headerEnd = 8 + Number(new DataView(good.buffer).getBigUint64(0, true));
    const rand = rng(20240611);
    const special = Buffer.from('{}[]":,0123456789-.e \\u"');
    const outcomes = { ok: 0, failed: 0 };
    for (let i = 0; i < 300; i++) {
      let bytes = good.slice();
      for (let m = 1 + Math.floor(rand() * 3); m > 0; m--) {
        const at = Math.floor(rand() * headerEnd);
        const value =
          rand() < 0.5 ? (special[Math.floor(rand() * special.length)] as number) : Math.floor(rand() * 256);
        const kind = rand();
        if (kind < 0.6) bytes[at] = value;
        else if (kind < 0.8) bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1)]);
        else bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([value]), bytes.subarray(at)]);
      }
      const start = performance.now();
      for (const attempt of [
        async () => decodeSafetensors(bytes, FILE),
        () =>
          readSafetensorsStream(chunked(bytes, 1 + Math.floor(rand() * 100)), bytes.length, { file: FILE }),
      ]) {
        try {
          await attempt();
          outcomes.ok++;
        } catch (err) {
          assert.ok(err instanceof CheckpointError, `mutation ${i}: ${String(err)}`);
          outcomes.failed++;
        }
      }
      assert.ok(performance.now() - start < 500, `mutation ${i} took too long`);
    }
    assert.ok(outcomes.failed > 300, JSON.stringify(outcomes));
  });
});
