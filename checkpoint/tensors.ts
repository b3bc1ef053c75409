/**
 * Named tensors as the checkpoint layer sees them: a dtype, a shape and little-endian bytes. No model and no
 * compute backend lives here, so any tfjs (or other) model can be stored.
 */
export type DType =
  'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, value);
}

export interface Tensor {
  dtype: DType;
  shape: readonly number[];
  /** Raw little-endian element bytes (any typed array view over them). */
  data: ArrayBufferView;
}

export type NamedTensors = Record<string, Tensor>;

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function byteLength(tensor: Pick<Tensor, 'dtype' | 'shape'>): number {
  return elementCount(tensor.shape) * DTYPE_BYTES[tensor.dtype];
}

export function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

export function f32Tensor(shape: readonly number[], values: Float32Array | number[]): Tensor {
  const data = values instanceof Float32Array ? values : Float32Array.from(values);
  return { dtype: 'F32', shape: [...shape], data };
}
