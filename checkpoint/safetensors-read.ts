/**
 * Reading safetensors files: one sequential pass over a stream that hashes, validates the header before any
 * tensor allocation and hands out tensors as their bytes arrive (readSafetensorsStream), and the read
 * scheduling that feeds it from positional reads in tensor-sized chunks (tensorAlignedChunks, ChunkPool).
 * The format itself (header parsing and validation, encoding, decoding) is safetensors-format.ts.
 */
import { checksumMismatch, FileDigest } from './checksum';
import { typedView } from './dtype';
import { IntegrityError, InvalidArgumentError, MissingFileError } from './errors';
import {
  checkFileLength,
  fault,
  headerLengthFromPrefix,
  parseSafetensorsHeader,
  setOwn,
  type SafetensorsHeader,
  type TensorInfo,
} from './safetensors-format';
import type { RangeReader, Store } from './store';
import type { NamedTensors, Tensor } from './tensors';

export interface ReadSafetensorsOptions {
  /** Named in every error. */
  file: string;
  /** Hex digest (either case), checked after the last byte: a mismatch is an IntegrityError. */
  expectedSha256?: string;
  /** CRC-32 as 8 hex digits (either case), checked after the last byte like expectedSha256. */
  expectedCrc32?: string;
  /** Tensors for which this returns false are skipped (still hashed). */
  select?: (name: string) => boolean;
  /**
   * Receives each selected tensor (in file order) as soon as its bytes are in, instead of keeping it. Awaited
   * before reading on. The checksums are only known at the end: a tensor handed out here is provisional until
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
  const digest = new FileDigest([
    ...(options.sha256 !== false || options.expectedSha256 !== undefined ? ['sha256' as const] : []),
    ...(options.expectedCrc32 !== undefined ? ['crc32' as const] : []),
  ]);
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
    digest.update(chunk);
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
  const actual = digest.record();
  const expected = {
    bytes: fileLength,
    sha256: options.expectedSha256?.toLowerCase(),
    crc32: options.expectedCrc32?.toLowerCase(),
  };
  const mismatch = checksumMismatch(expected, actual);
  if (mismatch) {
    throw new IntegrityError(
      `${file}: ${mismatch.kind} is ${mismatch.actual}, expected ${mismatch.expected}`,
      {
        file,
        field: mismatch.kind,
        expected: mismatch.expected,
        actual: mismatch.actual,
      },
    );
  }
  const sha256 = actual.sha256 ?? '';
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
