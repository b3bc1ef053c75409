/**
 * Conversions between the checkpoint layer's Tensor (dtype, shape, little-endian bytes in any view) and tfjs.
 * Views coming from a safetensors file may sit at any byte offset, so values are always copied out into fresh,
 * aligned arrays before typed access.
 */
import { endianness } from 'node:os';
import type * as tfjs from '@tensorflow/tfjs';
import { bytesOf, elementCount, type NamedTensors, type Tensor } from '../checkpoint/tensors';
import { activeBackend, backendName } from './backend';
import { TensorSetMismatchError, type ShapeMismatch } from './errors';

type TF = typeof tfjs;

// Typed arrays use the host's byte order; the on-disk contract is little-endian.
const HOST_LE = endianness() === 'LE';

function copyBytes(t: Tensor, bytesPerElement: number, name: string): ArrayBuffer {
  const bytes = bytesOf(t.data);
  const expected = elementCount(t.shape) * bytesPerElement;
  if (bytes.byteLength !== expected) {
    throw new TensorSetMismatchError(
      name,
      [],
      [],
      [{ name, expected: `${expected} bytes`, actual: `${bytes.byteLength} bytes` }],
    );
  }
  if (!HOST_LE) throw new Error('big-endian hosts are not supported by the model layer');
  return bytes.slice().buffer;
}

/** The values of an F32 tensor as a fresh Float32Array. */
export function readF32(t: Tensor, name: string): Float32Array {
  return new Float32Array(copyBytes(t, 4, name));
}

/** The value of an I64 scalar as a number (must be a safe integer). */
export function readI64Scalar(t: Tensor, name: string): number {
  const v = new BigInt64Array(copyBytes(t, 8, name))[0] ?? 0n;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new RangeError(`${name}: ${v} is not a safe integer`);
  return n;
}

export function i64Scalar(value: number): Tensor {
  return { dtype: 'I64', shape: [], data: BigInt64Array.of(BigInt(value)) };
}

/** An F32 copy of a tfjs tensor's values (dataSync may hand out backend storage, so always copy). */
export function f32Copy(t: tfjs.Tensor): Tensor {
  if (capturing) return { dtype: 'F32', shape: [...t.shape], data: capturing(t) };
  const values = t.dataSync();
  // The wasm backend's dataSync() already returns a fresh array (a slice of its heap): a second copy would
  // only cost time in every snapshot. The cpu and native backends may return arrays they keep.
  const fresh = values instanceof Float32Array && backendName() === 'wasm';
  const data = fresh
    ? values
    : values instanceof Float32Array
      ? values.slice()
      : Float32Array.from(values as ArrayLike<number>);
  return { dtype: 'F32', shape: [...t.shape], data };
}

/** The parts of tfjs-backend-wasm's backend object a snapshot reads (its heap and where each tensor sits). */
interface WasmBackendView {
  wasm: { HEAPU8: Uint8Array };
  dataIdMap: { get(dataId: object): { memoryOffset: number; dtype: string } | undefined };
}

/** Set while a SnapshotBuffers capture runs: where f32Copy puts its copy. */
let capturing: ((t: tfjs.Tensor) => Float32Array) | null = null;

/**
 * Reusable host memory for a run's snapshots (the async save's copy of the model and optimizer tensors).
 * Inside capture(), every f32Copy writes into the next of these buffers instead of a fresh array: the same
 * tensors in the same order every save, so after the first save no memory is allocated and none is touched
 * for the first time (a fresh array of 152 MiB costs its page faults at every save). On the wasm backend the
 * values are copied straight out of the backend's heap. The buffers are SharedArrayBuffers, so the save
 * thread reads them without a copy or a transfer (AsyncSaver's `shared` option). The caller must not capture
 * again while a save of the previous capture is still running: the trainer waits for it first.
 */
export class SnapshotBuffers {
  private readonly buffers: Float32Array[] = [];
  private next = 0;

  /** Runs `fn` (which takes the tensors with f32Copy) with its copies going into these buffers. */
  capture<T>(fn: () => T): T {
    if (capturing) throw new Error('internal: SnapshotBuffers.capture is not reentrant');
    capturing = (t) => this.copy(t);
    this.next = 0;
    try {
      return fn();
    } finally {
      capturing = null;
    }
  }

  /** Bytes held (for logs and tests). */
  get bytes(): number {
    return this.buffers.reduce((sum, b) => sum + b.byteLength, 0);
  }

  private copy(t: tfjs.Tensor): Float32Array {
    const size = t.size;
    const i = this.next++;
    let out = this.buffers[i];
    if (out?.length !== size) {
      out = new Float32Array(new SharedArrayBuffer(size * 4));
      this.buffers[i] = out;
    }
    const wasm = backendName() === 'wasm' && t.dtype === 'float32' ? wasmHeapView(t) : null;
    if (wasm) out.set(wasm);
    else out.set(t.dataSync() as ArrayLike<number>);
    return out;
  }
}

/** A view of a float32 tensor's values inside the wasm backend's heap (no copy), or null if not found. */
function wasmHeapView(t: tfjs.Tensor): Float32Array | null {
  const backend = activeBackend() as Partial<WasmBackendView> | undefined;
  const info = backend?.dataIdMap?.get(t.dataId);
  const heap = backend?.wasm?.HEAPU8;
  const offset = (heap?.byteOffset ?? 0) + (info?.memoryOffset ?? 0);
  if (!info || !heap || info.dtype !== 'float32' || offset % 4 !== 0) return null;
  return new Float32Array(heap.buffer, offset, t.size);
}

export interface ExpectedTensor {
  shape: readonly number[];
  dtype: string;
}

const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Compares what is present against what is expected and throws ONE TensorSetMismatchError listing every
 * missing, unexpected and mis-shaped (or mis-typed) name.
 */
export function checkTensorSet(
  what: string,
  expected: Record<string, ExpectedTensor>,
  actual: Iterable<[string, ExpectedTensor]>,
): void {
  const seen = new Set<string>();
  const unexpected: string[] = [];
  const mismatched: ShapeMismatch[] = [];
  for (const [name, got] of actual) {
    seen.add(name);
    const want = expected[name];
    if (!want) {
      unexpected.push(name);
    } else if (!sameShape(want.shape, got.shape)) {
      mismatched.push({ name, expected: want.shape, actual: got.shape });
    } else if (want.dtype !== got.dtype) {
      mismatched.push({ name, expected: want.dtype, actual: got.dtype });
    }
  }
  const missing = Object.keys(expected).filter((n) => !seen.has(n));
  if (missing.length + unexpected.length + mismatched.length > 0) {
    throw new TensorSetMismatchError(what, missing, unexpected.sort(), mismatched);
  }
}

/** Turns checkpoint tensors (F32 only) into tfjs tensors; the caller owns (and disposes) the result. */
export function toTfTensors(tf: TF, named: NamedTensors): Map<string, tfjs.Tensor> {
  const out = new Map<string, tfjs.Tensor>();
  try {
    for (const [name, t] of Object.entries(named)) {
      if (t.dtype !== 'F32') {
        throw new TensorSetMismatchError('tensors', [], [], [{ name, expected: 'F32', actual: t.dtype }]);
      }
      out.set(name, tf.tensor(readF32(t, name), [...t.shape], 'float32'));
    }
  } catch (err) {
    for (const t of out.values()) t.dispose();
    throw err;
  }
  return out;
}
