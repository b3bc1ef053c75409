/**
 * Conversions between stored dtypes and float32, with IEEE round-to-nearest-even for the 16-bit floats.
 * Training math runs in float32; checkpoints may store F16/BF16 to halve their size, so the rounding here
 * decides what a resumed run sees and must match what PyTorch/numpy would produce for the same bits.
 *
 * Byte order: Tensor.data is little-endian. Typed arrays use the host order, which is little-endian on every
 * platform Node ships for; reads that may be unaligned go through DataView with explicit little-endian.
 */
import { SafetensorsError, type ErrorContext, type SafetensorsFault } from './errors';
import { DTYPE_BYTES, bytesOf, elementCount, isDType, type DType, type Tensor } from './tensors';

// One scratch word to move between a float32 and its bits without allocating.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function f32Bits(value: number): number {
  scratchF32[0] = value;
  return scratchU32[0] as number;
}
function bitsToF32(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0] as number;
}

/** bfloat16 is the top half of a float32, so widening is exact. */
export function bf16BitsToF32(bits: number): number {
  return bitsToF32((bits & 0xffff) << 16);
}

/** float32 → bfloat16 bits, round-to-nearest-even; NaN stays NaN (quiet), overflow rounds to ±inf. */
export function f32ToBf16Bits(value: number): number {
  const b = f32Bits(value);
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) {
    // A NaN whose payload sits only in the low 16 bits would truncate to inf: force the quiet bit.
    return ((b >>> 16) | 0x40) & 0xffff;
  }
  // Adding 0x7fff plus the lowest kept bit rounds half-way cases to the even neighbour; a carry into the
  // exponent is the correct result (including max-float → inf).
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** IEEE binary16 bits → the (exactly representable) float32 value. */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // zero and subnormals
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * float32 → IEEE binary16 bits, round-to-nearest-even, producing subnormals below 2^-14, ±inf on overflow
 * (anything at or above 65520) and a quiet NaN for NaN. The argument is first rounded to float32, so the
 * result is the same as converting the float32 value the caller stores (no double rounding from float64).
 */
export function f32ToF16Bits(value: number): number {
  const b = f32Bits(value);
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15; // re-biased exponent
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: the value is m * 2^(exp-150) = (m >> shift) units of 2^-24 with shift = 14 - e.
    const shift = 14 - e;
    if (shift > 24) return sign; // below half the smallest subnormal (float32 subnormals land here too)
    const m = mant | 0x800000;
    let q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) === 1)) q++; // may carry into the smallest normal: correct
    return sign | q;
  }
  let q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (q & 1) === 1)) q++; // a carry to 0x7c00 is the correct inf
  return sign | q;
}

// 65536 entries (256 KiB), built on first F16 read: a table lookup beats decoding every element.
let f16Table: Float32Array | undefined;
function f16ToF32Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16BitsToF32(i);
  }
  return f16Table;
}

/**
 * Checks that a tensor is well formed: known dtype, shape of non-negative safe integers and exactly
 * elements × dtype-size bytes. BigInt keeps the product exact for absurd shapes.
 */
export function checkTensor(tensor: Tensor, context: ErrorContext): void {
  const who = context.tensor === undefined ? 'tensor' : `tensor ${JSON.stringify(context.tensor)}`;
  const where = context.file === undefined ? who : `${context.file}: ${who}`;
  const bad = (reason: SafetensorsFault, field: string | undefined, message: string) =>
    new SafetensorsError(reason, `${where} ${message}`, { ...context, field });
  if (tensor === null || typeof tensor !== 'object')
    throw bad('invalid-tensor', undefined, 'is not a tensor object');
  if (!isDType(tensor.dtype))
    throw bad('unknown-dtype', 'dtype', `has unknown dtype ${JSON.stringify(tensor.dtype)}`);
  if (!Array.isArray(tensor.shape) || !tensor.shape.every(isDim)) {
    throw bad('invalid-shape', 'shape', 'shape must be an array of non-negative integers');
  }
  if (!ArrayBuffer.isView(tensor.data)) throw bad('invalid-tensor', 'data', 'data is not an ArrayBufferView');
  const expected = shapeBytes(tensor.shape, tensor.dtype);
  if (BigInt(tensor.data.byteLength) !== expected) {
    const what = `${tensor.dtype}${JSON.stringify(tensor.shape)}`;
    throw bad(
      'shape-mismatch',
      'data',
      `${what} needs ${expected} bytes, data has ${tensor.data.byteLength}`,
    );
  }
}

export function isDim(d: unknown): d is number {
  return typeof d === 'number' && Number.isSafeInteger(d) && d >= 0 && !Object.is(d, -0);
}

/** Exact byte size of a shape/dtype as a BigInt (no overflow for any shape). */
export function shapeBytes(shape: readonly number[], dtype: DType): bigint {
  let n = BigInt(DTYPE_BYTES[dtype]);
  for (const d of shape) n *= BigInt(d);
  return n;
}

/** A typed array of the natural element type over `buffer` (which must be suitably aligned). */
export function typedView(
  dtype: DType,
  buffer: ArrayBuffer,
  byteOffset = 0,
  byteLen = buffer.byteLength - byteOffset,
): ArrayBufferView {
  const n = byteLen / DTYPE_BYTES[dtype];
  switch (dtype) {
    case 'F64':
      return new Float64Array(buffer, byteOffset, n);
    case 'F32':
      return new Float32Array(buffer, byteOffset, n);
    case 'F16':
    case 'BF16':
    case 'U16':
      return new Uint16Array(buffer, byteOffset, n);
    case 'I64':
      return new BigInt64Array(buffer, byteOffset, n);
    case 'U64':
      return new BigUint64Array(buffer, byteOffset, n);
    case 'I32':
      return new Int32Array(buffer, byteOffset, n);
    case 'U32':
      return new Uint32Array(buffer, byteOffset, n);
    case 'I16':
      return new Int16Array(buffer, byteOffset, n);
    case 'I8':
      return new Int8Array(buffer, byteOffset, n);
    case 'U8':
    case 'BOOL':
      return new Uint8Array(buffer, byteOffset, n);
  }
}

/**
 * The tensor's values as float32. F32 data that is 4-byte aligned is returned without copying (a view
 * over the same memory: do not mutate it if the tensor must stay intact); everything else is a new array.
 * 64-bit integers beyond 2^24 lose precision, as any float32 conversion must.
 */
export function toFloat32(tensor: Tensor): Float32Array {
  checkTensor(tensor, {});
  const { data } = tensor;
  const n = elementCount(tensor.shape);
  if (tensor.dtype === 'F32') {
    if (data instanceof Float32Array) return data;
    if (data.byteOffset % 4 === 0) return new Float32Array(data.buffer, data.byteOffset, n);
    return new Float32Array(bytesOf(data).slice().buffer); // unaligned: one copy
  }
  const out = new Float32Array(n);
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (tensor.dtype) {
    case 'BF16': {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = dv.getUint16(2 * i, true) << 16;
      break;
    }
    case 'F16': {
      const table = f16ToF32Table();
      for (let i = 0; i < n; i++) out[i] = table[dv.getUint16(2 * i, true)] as number;
      break;
    }
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      break;
    case 'I64':
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(8 * i, true));
      break;
    case 'U64':
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigUint64(8 * i, true));
      break;
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      break;
    case 'U32':
      for (let i = 0; i < n; i++) out[i] = dv.getUint32(4 * i, true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(2 * i, true);
      break;
    case 'U16':
      for (let i = 0; i < n; i++) out[i] = dv.getUint16(2 * i, true);
      break;
    case 'I8':
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(i);
      break;
    case 'U8':
      for (let i = 0; i < n; i++) out[i] = dv.getUint8(i);
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = dv.getUint8(i) !== 0 ? 1 : 0;
      break;
  }
  return out;
}

/** float32 values → a tensor of `dtype`, rounding to nearest-even for the 16-bit formats. Always copies. */
export function fromFloat32(
  values: Float32Array,
  shape: readonly number[],
  dtype: 'F32' | 'BF16' | 'F16',
): Tensor {
  if (!Array.isArray(shape) || !shape.every(isDim) || elementCount(shape) !== values.length) {
    throw new SafetensorsError(
      'shape-mismatch',
      `shape ${JSON.stringify(shape)} does not hold ${values.length} values`,
      { field: 'shape' },
    );
  }
  if (dtype === 'F32') return { dtype, shape: [...shape], data: values.slice() };
  if (dtype !== 'BF16' && dtype !== 'F16') {
    throw new SafetensorsError('unknown-dtype', `fromFloat32 cannot produce ${String(dtype)}`, {
      field: 'dtype',
    });
  }
  const convert = dtype === 'BF16' ? f32ToBf16Bits : f32ToF16Bits;
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i] as number);
  return { dtype, shape: [...shape], data: out };
}
