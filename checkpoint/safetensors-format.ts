/**
 * The safetensors format (https://huggingface.co/docs/safetensors), written and parsed without any npm package:
 *
 *   [u64 little-endian N][N bytes of UTF-8 JSON header, space-padded][tensor bytes...]
 *
 * The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the
 * byte after the header) plus an optional "__metadata__" object of string → string.
 *
 * A checkpoint file is untrusted input: the header is validated entirely (sizes, offsets, dtypes, duplicate
 * keys) before memory is allocated for any tensor, and capped at 100 MB before the header itself is
 * allocated, so a corrupt or hostile file fails fast with a SafetensorsError naming the broken rule instead
 * of exhausting memory or producing garbage tensors. Reading from streams and stores is
 * safetensors-read.ts.
 */
import { checkTensor, isDim, shapeBytes, typedView } from './dtype';
import { InvalidArgumentError, SafetensorsError, type ErrorContext, type SafetensorsFault } from './errors';
import { bytesOf, isDType, type DType, type NamedTensors, type Tensor } from './tensors';

/** The same cap as the reference (Rust) implementation. */
export const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';
const TENSOR_FIELDS = ['dtype', 'shape', 'data_offsets'] as const;

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** [begin, end) relative to the first byte after the header. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  metadata: Record<string, string>;
  /** In file order (ascending offsets). */
  tensorInfos: TensorInfo[];
  /** N, the JSON header's byte length; tensor data starts at 8 + N. */
  headerLength: number;
}

/** Assigns as an own property, so a tensor named "__proto__" is data and never touches the prototype. */
export function setOwn<T>(target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

// A lone UTF-16 surrogate cannot be encoded as UTF-8; the reference reader rejects its \u escape.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

// ---------------------------------------------------------------------------------------------- writer

function metadataJson(metadata: Record<string, string>): string {
  const bad = (field: string, message: string) =>
    new SafetensorsError('invalid-metadata', message, { field });
  if (!isRecord(metadata)) throw bad(METADATA_KEY, 'metadata must be an object of string → string');
  const parts: string[] = [];
  for (const key of Object.keys(metadata).sort()) {
    const value: unknown = metadata[key];
    if (typeof value !== 'string' || LONE_SURROGATE.test(key) || LONE_SURROGATE.test(value)) {
      throw bad(`${METADATA_KEY}.${key}`, `metadata ${JSON.stringify(key)} must be a well-formed string`);
    }
    parts.push(`${JSON.stringify(key)}:${JSON.stringify(value)}`);
  }
  return `{${parts.join(',')}}`;
}

/**
 * Serializes without copying tensor data: the first chunk is the 8-byte length plus the padded header, then
 * one chunk per non-empty tensor, each a view over that tensor's own bytes (do not mutate the tensors while
 * the chunks are consumed). Tensors are laid out in ascending name order (UTF-16 code-unit order, not
 * locale-dependent) so the same tensors always give the same bytes. Everything is validated up front: the
 * call throws, not the iteration.
 */
export function safetensorsChunks(
  tensors: NamedTensors,
  metadata?: Record<string, string>,
): { totalBytes: number; chunks: Generator<Uint8Array> } {
  if (!isRecord(tensors))
    throw new SafetensorsError('invalid-tensor', 'tensors must be an object of named tensors');
  const entries: string[] = [];
  if (metadata !== undefined) entries.push(`"${METADATA_KEY}":${metadataJson(metadata)}`);
  const views: Uint8Array[] = [];
  let offset = 0;
  // Default sort compares UTF-16 code units: deterministic everywhere.
  for (const name of Object.keys(tensors).sort()) {
    if (name === METADATA_KEY || LONE_SURROGATE.test(name)) {
      const message = `${JSON.stringify(name)} cannot be a tensor name`;
      throw new SafetensorsError('invalid-tensor', message, { tensor: name });
    }
    const tensor = tensors[name] as Tensor;
    checkTensor(tensor, { tensor: name });
    const begin = offset;
    offset += tensor.data.byteLength;
    const shape = tensor.shape.join(',');
    entries.push(
      `${JSON.stringify(name)}:{"dtype":"${tensor.dtype}","shape":[${shape}],"data_offsets":[${begin},${offset}]}`,
    );
    if (tensor.data.byteLength > 0) views.push(bytesOf(tensor.data));
  }
  const json = Buffer.from(`{${entries.join(',')}}`, 'utf8');
  // Padding to a multiple of 8 keeps the data section 8-byte aligned for readers that map the file.
  const headerLength = Math.ceil(json.length / 8) * 8;
  if (headerLength > MAX_HEADER_BYTES) {
    const message = `header of ${headerLength} bytes exceeds ${MAX_HEADER_BYTES}`;
    throw new SafetensorsError('header-too-large', message);
  }
  const head = new Uint8Array(8 + headerLength).fill(0x20, 8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(headerLength), true);
  head.set(json, 8);
  function* chunks(): Generator<Uint8Array> {
    yield head;
    yield* views;
  }
  return { totalBytes: head.length + offset, chunks: chunks() };
}

/** The whole file in one buffer: for small files and tests (checkpoints should stream the chunks). */
export function encodeSafetensors(tensors: NamedTensors, metadata?: Record<string, string>): Uint8Array {
  const { totalBytes, chunks } = safetensorsChunks(tensors, metadata);
  const out = new Uint8Array(totalBytes);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}

// ------------------------------------------------------------------------------------- header checks

export function fault(reason: SafetensorsFault, file: string, message: string, context: ErrorContext = {}) {
  return new SafetensorsError(reason, `${file}: ${message}`, { file, ...context });
}

export function checkFileLength(fileLength: number, file: string): void {
  if (!Number.isSafeInteger(fileLength) || fileLength < 0) {
    throw new InvalidArgumentError(`${file}: file length ${fileLength} is not a byte count`, { file });
  }
  if (fileLength < 8)
    throw fault('truncated', file, `${fileLength} bytes cannot hold the 8-byte header length`);
}

/** N from the 8-byte prefix, rejected before anything of size N is allocated. */
export function headerLengthFromPrefix(prefix: Uint8Array, fileLength: number, file: string): number {
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw fault('header-too-large', file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (8 + Number(n) > fileLength) {
    throw fault('header-past-end', file, `header length ${n} runs past the ${fileLength}-byte file's end`);
  }
  return Number(n);
}

/**
 * Walks the (already valid) JSON text once to find what JSON.parse hides: duplicate keys in any object
 * (JSON.parse silently keeps the last) and numbers that are not plain integer literals ("1.0", "1e3", "-0"
 * parse to integers but the format, like the reference reader, only has unsigned integers).
 */
function scanHeader(text: string, file: string): void {
  const stack: { keys: Set<string> | null; key?: string; expectKey: boolean }[] = [];
  const where = (): ErrorContext => ({ tensor: stack[0]?.key, field: stack[1]?.key });
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const top = stack[stack.length - 1];
    if (c === 0x7b /* { */) stack.push({ keys: new Set(), expectKey: true });
    else if (c === 0x5b /* [ */) stack.push({ keys: null, expectKey: false });
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) stack.pop();
    else if (c === 0x2c /* , */ && top?.keys) top.expectKey = true;
    else if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (let d = text.charCodeAt(j); d !== 0x22; d = text.charCodeAt(j)) {
        if (d === 0x5c /* backslash */) escaped = true;
        j += d === 0x5c ? 2 : 1;
      }
      if (top?.keys && top.expectKey) {
        // Escapes must be decoded before comparing: "\u0061" and "a" are the same key.
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        if (top.keys.has(key)) {
          const ctx = stack.length === 1 ? { tensor: key } : { ...where(), field: key };
          throw fault('duplicate-key', file, `duplicate key ${JSON.stringify(key)} in the header`, ctx);
        }
        top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      while (j < text.length && '+-0123456789.eE'.includes(text[j] as string)) j++;
      const literal = text.slice(i, j);
      if (/[.eE]/.test(literal) || literal === '-0') {
        const ctx = where();
        let reason: SafetensorsFault = ctx.field === 'shape' ? 'invalid-shape' : 'invalid-tensor';
        if (ctx.tensor === METADATA_KEY) reason = 'invalid-metadata';
        throw fault(reason, file, `number ${literal} is not an integer literal`, ctx);
      }
      i = j - 1;
    }
  }
}

function parseTensorEntry(name: string, entry: unknown, file: string): TensorInfo {
  const bad = (reason: SafetensorsFault, field: string | undefined, message: string) =>
    fault(reason, file, `tensor ${JSON.stringify(name)} ${message}`, { tensor: name, field });
  if (!isRecord(entry)) throw bad('invalid-tensor', undefined, 'is not an object');
  const extra = Object.keys(entry).find((key) => !(TENSOR_FIELDS as readonly string[]).includes(key));
  if (extra !== undefined)
    throw bad('invalid-tensor', extra, `has unexpected field ${JSON.stringify(extra)}`);
  const missing = TENSOR_FIELDS.find((key) => !(key in entry));
  if (missing !== undefined) throw bad('invalid-tensor', missing, `has no ${missing}`);

  const { dtype, shape, data_offsets: offsets } = entry;
  if (!isDType(dtype)) throw bad('unknown-dtype', 'dtype', `has unsupported dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || !shape.every(isDim)) {
    throw bad('invalid-shape', 'shape', 'shape must be an array of non-negative integers');
  }
  const [begin, end] = (Array.isArray(offsets) ? offsets : []) as unknown[];
  if (!Array.isArray(offsets) || offsets.length !== 2 || !isDim(begin) || !isDim(end) || end < begin) {
    throw bad(
      'invalid-tensor',
      'data_offsets',
      'data_offsets must be [begin, end] integers with end >= begin',
    );
  }
  const expected = shapeBytes(shape, dtype); // BigInt: no overflow for huge shapes
  if (BigInt(end - begin) !== expected) {
    const what = `${dtype}${JSON.stringify(shape)}`;
    throw bad(
      'shape-mismatch',
      'data_offsets',
      `${what} needs ${expected} bytes, offsets give ${end - begin}`,
    );
  }
  return { name, dtype, shape: [...shape], dataOffsets: [begin, end] };
}

/**
 * Validates a header completely against a file of `fileLength` bytes. Nothing here allocates in proportion
 * to tensor sizes, so callers may allocate tensors only after this returns.
 */
export function parseSafetensorsHeader(
  headerJson: Uint8Array,
  fileLength: number,
  file: string,
): SafetensorsHeader {
  const headerLength = headerJson.byteLength;
  let text: string;
  try {
    // ignoreBOM keeps a BOM in the text, where JSON.parse rejects it, as the reference reader does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerJson);
  } catch (cause) {
    throw fault('invalid-json', file, 'header is not valid UTF-8', { cause });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw fault('invalid-json', file, `header is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (headerJson[0] !== 0x7b || !isRecord(parsed)) {
    throw fault('invalid-header', file, 'header must be a JSON object starting at its first byte');
  }
  scanHeader(text, file);

  const metadata: Record<string, string> = {};
  const tensorInfos: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(parsed)) {
    if (name !== METADATA_KEY) {
      tensorInfos.push(parseTensorEntry(name, entry, file));
      continue;
    }
    if (!isRecord(entry)) throw fault('invalid-metadata', file, `${name} must be an object`, { field: name });
    for (const [key, value] of Object.entries(entry)) {
      const field = `${name}.${key}`;
      if (typeof value !== 'string')
        throw fault('invalid-metadata', file, `${field} is not a string`, { field });
      setOwn(metadata, key, value);
    }
  }

  // Sorting by (begin, end) places an empty tensor before a non-empty one that starts at the same offset.
  tensorInfos.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let dataEnd = 0;
  for (const { name, dataOffsets } of tensorInfos) {
    const [begin, end] = dataOffsets;
    if (begin !== dataEnd) {
      const [reason, what] =
        begin < dataEnd
          ? (['offsets-overlap', 'overlapping'] as const)
          : (['offsets-gap', 'leaving a gap after'] as const);
      const message = `tensor ${JSON.stringify(name)} starts at ${begin}, ${what} the bytes that end at ${dataEnd}`;
      throw fault(reason, file, message, { tensor: name, field: 'data_offsets' });
    }
    dataEnd = end;
  }
  const expected = 8 + headerLength + dataEnd;
  if (expected !== fileLength) {
    const reason = expected > fileLength ? 'truncated' : 'length-mismatch';
    throw fault(reason, file, `header describes ${expected} bytes but the file has ${fileLength}`);
  }
  return { metadata, tensorInfos, headerLength };
}

/** Decodes a whole file held in memory; every tensor gets its own (aligned) copy of its bytes. */
export function decodeSafetensors(
  bytes: Uint8Array,
  file = '<memory>',
): SafetensorsHeader & { tensors: NamedTensors } {
  checkFileLength(bytes.byteLength, file);
  const headerLength = headerLengthFromPrefix(bytes.subarray(0, 8), bytes.byteLength, file);
  const header = parseSafetensorsHeader(bytes.subarray(8, 8 + headerLength), bytes.byteLength, file);
  const tensors: NamedTensors = {};
  const dataStart = 8 + headerLength;
  for (const info of header.tensorInfos) {
    const [begin, end] = info.dataOffsets;
    const copy = new Uint8Array(end - begin);
    copy.set(bytes.subarray(dataStart + begin, dataStart + end));
    setOwn<Tensor>(tensors, info.name, {
      dtype: info.dtype,
      shape: [...info.shape],
      data: typedView(info.dtype, copy.buffer),
    });
  }
  return { ...header, tensors };
}
