/**
 * The safetensors format (https://huggingface.co/docs/safetensors), written and read without any npm package:
 *
 *   [u64 little-endian N][N bytes of UTF-8 JSON header, space-padded][tensor bytes...]
 *
 * The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the
 * byte after the header) plus an optional "__metadata__" object of string → string.
 *
 * A checkpoint file is untrusted input: a reader validates the entire header (sizes, offsets, dtypes,
 * duplicate keys) before it allocates memory for any tensor, and caps the header at 100 MB before it
 * allocates the header itself, so a corrupt or hostile file fails fast with a SafetensorsError naming the
 * broken rule instead of exhausting memory or producing garbage tensors.
 */
import { createHash } from 'node:crypto';
import { checkTensor, isDim, shapeBytes, typedView } from './dtype';
import {
  IntegrityError,
  InvalidArgumentError,
  MissingFileError,
  SafetensorsError,
  type ErrorContext,
  type SafetensorsFault,
} from './errors';
import type { RangeReader, Store } from './store';
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
function setOwn<T>(target: Record<string, T>, key: string, value: T): void {
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

function fault(reason: SafetensorsFault, file: string, message: string, context: ErrorContext = {}) {
  return new SafetensorsError(reason, `${file}: ${message}`, { file, ...context });
}

function checkFileLength(fileLength: number, file: string): void {
  if (!Number.isSafeInteger(fileLength) || fileLength < 0) {
    throw new InvalidArgumentError(`${file}: file length ${fileLength} is not a byte count`, { file });
  }
  if (fileLength < 8)
    throw fault('truncated', file, `${fileLength} bytes cannot hold the 8-byte header length`);
}

/** N from the 8-byte prefix, rejected before anything of size N is allocated. */
function headerLengthFromPrefix(prefix: Uint8Array, fileLength: number, file: string): number {
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

// --------------------------------------------------------------------------------------------- readers

export interface ReadSafetensorsOptions {
  /** Named in every error. */
  file: string;
  /** Hex digest (either case), checked after the last byte: a mismatch is an IntegrityError. */
  expectedSha256?: string;
  /** Tensors for which this returns false are skipped (still hashed). */
  select?: (name: string) => boolean;
  /**
   * Receives each selected tensor (in file order) as soon as its bytes are in, instead of keeping it. Awaited
   * before reading on. The sha256 is only known at the end: a tensor handed out here is provisional until
   * readSafetensorsStream resolves, so callers must not commit anything derived from it before then.
   */
  onTensor?: (name: string, tensor: Tensor) => void | Promise<void>;
  /**
   * Compute the sha256 (default true; always on when expectedSha256 is given). When false the result's
   * sha256 is '' and no hashing cost is paid.
   */
  sha256?: boolean;
  /**
   * The stream hands its chunks over: a chunk that is exactly one whole tensor (its own ArrayBuffer, nothing
   * else in it) becomes that tensor's storage instead of being copied. Only for streams that never reuse or
   * keep a chunk they yielded (see tensorAlignedChunks).
   */
  adoptChunks?: boolean;
  /**
   * Receives every chunk the reader is done with, for a pooled stream to reuse (see ChunkPool): a chunk it
   * copied from once consumed, an adopted chunk once onTensor has resolved. With it, a tensor handed to
   * onTensor is only valid until onTensor resolves (the callback must copy what it keeps).
   */
  release?: (chunk: Uint8Array) => void;
}

export interface SafetensorsReadResult {
  metadata: Record<string, string>;
  tensors: NamedTensors;
  sha256: string;
  tensorInfos: TensorInfo[];
}

/**
 * Reads a safetensors file from a stream in one sequential pass: hashes every byte, validates the header
 * before any tensor allocation, and copies each tensor into its own ArrayBuffer (aligned typed arrays, no
 * second copy of the file). The stream must yield exactly `fileLength` bytes.
 */
export async function readSafetensorsStream(
  stream: AsyncIterable<Uint8Array>,
  fileLength: number,
  options: ReadSafetensorsOptions,
): Promise<SafetensorsReadResult> {
  const { file, select, onTensor } = options;
  checkFileLength(fileLength, file);
  const hash = options.sha256 === false && options.expectedSha256 === undefined ? null : createHash('sha256');
  const tensors: NamedTensors = {};
  const prefix = new Uint8Array(8);
  let header: Uint8Array | undefined;
  let parsed: SafetensorsHeader | undefined;
  let dataStart = 0;
  let pos = 0; // bytes consumed so far (absolute file offset)
  let ti = 0; // index of the tensor whose bytes come next
  let current: Uint8Array | undefined; // its buffer, allocated at its first byte when selected
  let filled = 0;

  const deliver = async (info: TensorInfo, bytes: Uint8Array): Promise<void> => {
    const tensor: Tensor = {
      dtype: info.dtype,
      shape: [...info.shape],
      data: typedView(info.dtype, bytes.buffer as ArrayBuffer),
    };
    if (onTensor) await onTensor(info.name, tensor);
    else setOwn(tensors, info.name, tensor);
  };
  const selected = (info: TensorInfo): boolean => !select || select(info.name);
  // Empty tensors have no bytes to wait for: deliver them as soon as the stream reaches their offset.
  const deliverEmpties = async (infos: TensorInfo[]): Promise<void> => {
    for (let info = infos[ti]; info && info.dataOffsets[0] === info.dataOffsets[1]; info = infos[++ti]) {
      if (selected(info)) await deliver(info, new Uint8Array(0));
    }
  };

  for await (const chunk of stream) {
    if (!(chunk instanceof Uint8Array)) {
      throw new InvalidArgumentError(`${file}: the stream must yield bytes, not ${typeof chunk}`, { file });
    }
    if (pos + chunk.byteLength > fileLength) {
      throw fault('length-mismatch', file, `stream yields more than the expected ${fileLength} bytes`);
    }
    hash?.update(chunk);
    let adopted = false;
    let off = 0;
    while (off < chunk.byteLength) {
      if (pos < 8) {
        const take = Math.min(8 - pos, chunk.byteLength - off);
        prefix.set(chunk.subarray(off, off + take), pos);
        pos += take;
        off += take;
        if (pos === 8) {
          header = new Uint8Array(headerLengthFromPrefix(prefix, fileLength, file));
          dataStart = 8 + header.byteLength;
        }
      } else if (pos < dataStart) {
        const take = Math.min(dataStart - pos, chunk.byteLength - off);
        header?.set(chunk.subarray(off, off + take), pos - 8);
        pos += take;
        off += take;
      } else if (parsed) {
        const info = parsed.tensorInfos[ti];
        if (!info) throw fault('length-mismatch', file, 'bytes after the last tensor'); // the header forbids it
        const size = info.dataOffsets[1] - info.dataOffsets[0];
        const take = Math.min(size - filled, chunk.byteLength - off);
        if (filled === 0 && selected(info)) {
          const whole =
            off === 0 && take === size && chunk.byteOffset === 0 && chunk.buffer.byteLength === size;
          adopted = !!options.adoptChunks && whole;
          current = adopted ? chunk : new Uint8Array(size);
        }
        if (current !== chunk) current?.set(chunk.subarray(off, off + take), filled);
        filled += take;
        pos += take;
        off += take;
        if (filled === size) {
          if (current) await deliver(info, current);
          if (current === chunk && onTensor) options.release?.(chunk); // delivered and done with
          current = undefined;
          filled = 0;
          ti++;
          await deliverEmpties(parsed.tensorInfos);
        }
      }
      if (!parsed && header && pos === dataStart) {
        parsed = parseSafetensorsHeader(header, fileLength, file);
        header = undefined; // release it: the header may be up to 100 MB
        await deliverEmpties(parsed.tensorInfos);
      }
    }
    if (!adopted) options.release?.(chunk);
  }
  if (pos < fileLength || !parsed || ti !== parsed.tensorInfos.length) {
    throw fault('truncated', file, `stream ended after ${pos} of ${fileLength} bytes`);
  }
  const sha256 = hash ? hash.digest('hex') : '';
  if (options.expectedSha256 !== undefined && options.expectedSha256.toLowerCase() !== sha256) {
    throw new IntegrityError(`${file}: sha256 is ${sha256}, expected ${options.expectedSha256}`, {
      file,
      field: 'sha256',
      expected: options.expectedSha256,
      actual: sha256,
    });
  }
  return { metadata: parsed.metadata, tensors, sha256, tensorInfos: parsed.tensorInfos };
}

/**
 * Chunk buffers handed back through readSafetensorsStream's `release`, reused by tensorAlignedChunks for
 * later chunks of the same size: a load whose tensors are copied elsewhere (a wasm heap) then allocates
 * about one buffer per distinct tensor size instead of one per tensor, and leaves no garbage behind.
 */
export class ChunkPool {
  private readonly free = new Map<number, Uint8Array[]>();

  /** A buffer of exactly `size` bytes with its own ArrayBuffer; its contents are undefined. */
  take(size: number): Uint8Array {
    return this.free.get(size)?.pop() ?? Buffer.allocUnsafe(size);
  }

  give(chunk: Uint8Array): void {
    // Only whole buffers (not views into a shared slab, such as Node's small-Buffer pool).
    if (chunk.byteOffset !== 0 || chunk.buffer.byteLength !== chunk.byteLength || chunk.byteLength === 0)
      return;
    const list = this.free.get(chunk.byteLength);
    if (list) list.push(chunk);
    else this.free.set(chunk.byteLength, [chunk]);
  }
}

/** Tensors at least this big are read into a buffer of their own (and adopted)... */
const OWN_SPAN_MIN = 256 << 10;
/** ...smaller ones are read in groups of up to this many bytes (copied out by the reader). */
const SPAN_BYTES = 4 << 20;
/** The next span is read ahead (while the current one is hashed) only up to this size, to bound memory. */
const READ_AHEAD_MAX = 64 << 20;

/**
 * A safetensors file read through positional reads, in chunks laid out for readSafetensorsStream with
 * `adoptChunks`: the prefix and header first, then each tensor of OWN_SPAN_MIN or more in a buffer of its
 * own (adopted as the tensor's storage: the bytes are copied once, by the kernel, and never again), smaller
 * tensors grouped into chunks of up to SPAN_BYTES. The next chunk is read while the consumer works on the
 * current one. A file whose header does not parse is passed on in plain chunks, so that
 * readSafetensorsStream reports the fault exactly as it would for any stream. Buffers come from `pool`
 * when given (pair it with the reader's `release`), else are fresh. Does not close the reader.
 */
export async function* tensorAlignedChunks(
  reader: RangeReader,
  fileLength: number,
  file: string,
  pool?: ChunkPool,
): AsyncGenerator<Uint8Array> {
  const spans: [number, number][] = [];
  let head: Uint8Array | undefined;
  try {
    checkFileLength(fileLength, file);
    const prefix = new Uint8Array(8);
    if ((await reader.readInto(prefix, 0)) === 8) {
      const n = headerLengthFromPrefix(prefix, fileLength, file);
      head = new Uint8Array(8 + n);
      if ((await reader.readInto(head, 0)) !== head.byteLength) throw new Error('short read');
      const { tensorInfos } = parseSafetensorsHeader(head.subarray(8), fileLength, file);
      let group: [number, number] | undefined;
      for (const { dataOffsets } of tensorInfos) {
        const [begin, end] = [head.byteLength + dataOffsets[0], head.byteLength + dataOffsets[1]];
        if (begin === end) continue;
        if (group && (end - begin >= OWN_SPAN_MIN || end - group[0] > SPAN_BYTES)) {
          spans.push(group);
          group = undefined;
        }
        if (end - begin >= OWN_SPAN_MIN) spans.push([begin, end]);
        else group = group ? [group[0], end] : [begin, end];
      }
      if (group) spans.push(group);
    }
  } catch {
    head = undefined;
  }
  if (!head) {
    spans.length = 0;
    for (let at = 0; at < fileLength; at += SPAN_BYTES)
      spans.push([at, Math.min(at + SPAN_BYTES, fileLength)]);
  } else {
    yield head;
  }
  // One byte past the end: a file that grew since it was measured must still fail as too long.
  spans.push([fileLength, fileLength + 1]);

  const read = async ([begin, end]: [number, number]): Promise<Uint8Array> => {
    // Not zero-filled (saves a pass over fresh memory): the read overwrites it all, and after a short read
    // only the bytes read are passed on (as a view the reader copies, never adopts).
    const buf = pool ? pool.take(end - begin) : Buffer.allocUnsafe(end - begin);
    const got = await reader.readInto(buf, begin);
    return got === buf.byteLength ? buf : buf.subarray(0, got);
  };
  const start = (span: [number, number]) => {
    const p = read(span);
    p.catch(() => undefined); // awaited below; this only keeps an abandoned read-ahead from going unhandled
    return p;
  };
  let next: Promise<Uint8Array> | undefined = start(spans[0]!);
  for (let i = 0; i < spans.length; i++) {
    const chunk = await (next ?? read(spans[i]!));
    const following = spans[i + 1];
    next = following && following[1] - following[0] <= READ_AHEAD_MAX ? start(following) : undefined;
    if (chunk.byteLength > 0) yield chunk;
    if (chunk.byteLength < spans[i]![1] - spans[i]![0]) return; // end of file
  }
}

/** Reads and validates only the header, with two range reads (for `inspect`): no tensor bytes are read. */
export async function readSafetensorsHeader(store: Store, key: string): Promise<SafetensorsHeader> {
  const entry = await store.stat(key);
  if (!entry) throw new MissingFileError(`${key}: no such file in ${store.location}`, { file: key });
  checkFileLength(entry.bytes, key);
  const prefix = await store.readRange(key, 0, 8);
  if (prefix.byteLength < 8) throw fault('truncated', key, 'file ends inside the 8-byte header length');
  const headerLength = headerLengthFromPrefix(prefix, entry.bytes, key);
  const header = await store.readRange(key, 8, headerLength);
  if (header.byteLength < headerLength) throw fault('truncated', key, 'file ends inside the header');
  return parseSafetensorsHeader(header, entry.bytes, key);
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
