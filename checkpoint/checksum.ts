/**
 * What a manifest records about each file: its size and a checksum of its bytes. New files are recorded
 * with CRC-32 (zlib's, the one S3 reports as x-amz-checksum-crc32 for a whole object): at about twice
 * sha256's speed on one core it keeps up with the disk, so saves run at write speed, and Python computes it
 * with its standard library (zlib.crc32). Manifests written before format version 2 carry sha256, and a
 * record may carry both; a reader checks every checksum a record has. Which one a record has is what its
 * fields say: there is no separate switch.
 *
 * CRC-32 detects corruption (every burst of up to 32 bits, and any other change but for a 2^-32 chance),
 * not tampering: a store someone may write to on purpose needs its own access control either way.
 */
import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';

export type ChecksumKind = 'crc32' | 'sha256';

/** The checksum this version records for the files it writes. */
export const RECORDED_CHECKSUM: ChecksumKind = 'crc32';

/** Lowercase hex, fixed width: crc32 is the unsigned 32-bit value big-endian (Python: f"{zlib.crc32(b):08x}"). */
export const CHECKSUM_FORMS: Record<ChecksumKind, RegExp> = {
  crc32: /^[0-9a-f]{8}$/,
  sha256: /^[0-9a-f]{64}$/,
};

export interface FileRecord {
  bytes: number;
  crc32?: string;
  sha256?: string;
}

export function checksumKinds(record: FileRecord): ChecksumKind[] {
  return (['crc32', 'sha256'] as const).filter((kind) => record[kind] !== undefined);
}

/** Size and checksums of bytes fed in order; computes only the kinds asked for. */
export class FileDigest {
  bytes = 0;
  private crc: number | undefined;
  private readonly sha: Hash | undefined;

  constructor(kinds: readonly ChecksumKind[] = [RECORDED_CHECKSUM]) {
    this.crc = kinds.includes('crc32') ? 0 : undefined;
    this.sha = kinds.includes('sha256') ? createHash('sha256') : undefined;
  }

  update(chunk: Uint8Array): void {
    if (this.crc !== undefined) this.crc = crc32(chunk, this.crc);
    this.sha?.update(chunk);
    this.bytes += chunk.byteLength;
  }

  /** Once, after the last byte. */
  record(): FileRecord {
    return {
      bytes: this.bytes,
      ...(this.crc !== undefined ? { crc32: this.crc.toString(16).padStart(8, '0') } : {}),
      ...(this.sha ? { sha256: this.sha.digest('hex') } : {}),
    };
  }
}

export function digestChunks(chunks: Iterable<Uint8Array>, kinds?: readonly ChecksumKind[]): FileRecord {
  const digest = new FileDigest(kinds);
  for (const chunk of chunks) digest.update(chunk);
  return digest.record();
}

export async function digestStream(
  stream: AsyncIterable<Uint8Array>,
  kinds?: readonly ChecksumKind[],
): Promise<FileRecord> {
  const digest = new FileDigest(kinds);
  for await (const chunk of stream) digest.update(chunk);
  return digest.record();
}

/** The first checksum `actual` has that differs from `expected`'s, or null when every shared one agrees. */
export function checksumMismatch(
  expected: FileRecord,
  actual: FileRecord,
): { kind: ChecksumKind; expected: string; actual: string } | null {
  for (const kind of checksumKinds(expected)) {
    const got = actual[kind];
    if (got !== undefined && got !== expected[kind]) return { kind, expected: expected[kind]!, actual: got };
  }
  return null;
}

/** Same size and every checksum both records have agrees (and they share at least one). */
export function sameContent(a: FileRecord, b: FileRecord): boolean {
  return (
    a.bytes === b.bytes &&
    checksumKinds(a).some((kind) => b[kind] !== undefined) &&
    checksumMismatch(a, b) === null
  );
}
