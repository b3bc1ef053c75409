/**
 * Where checkpoint files live. Keys are relative, '/'-separated paths under the store's root. A local
 * directory and an object store implement the same contract, so the commit protocol is written once.
 */
import type { FileRecord } from './checksum';

export interface StoreEntry {
  key: string;
  bytes: number;
  mtimeMs: number;
}

/** Size and checksum(s) of what was written (checksum.ts). */
export type PutResult = FileRecord;

export interface PutOptions {
  /**
   * Publish only if no object exists under the key (no-replace). A file that exists makes the put fail
   * with AlreadyExistsError and leaves the existing bytes untouched.
   */
  exclusive?: boolean;
}

export type ByteSource = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** Positional reads of one open object (Store.openReader). */
export interface RangeReader {
  /** Fills `target` with the bytes from `position` on; returns how many it read (fewer only at the end). */
  readInto(target: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

export interface Store {
  /** Human-readable location of the root (a path or a URL). */
  readonly location: string;
  /**
   * Write bytes so that readers see either nothing or the whole file under `key` (temp name, durable
   * write, then publish). Returns the size and checksum of what was written (crc32 for this package's
   * stores; a store of its own may return sha256 instead, which the manifest records as it is).
   */
  put(key: string, source: ByteSource, options?: PutOptions): Promise<PutResult>;
  /** The whole object (for small files: JSON). */
  read(key: string): Promise<Buffer>;
  /** Bytes [offset, offset + length). */
  readRange(key: string, offset: number, length: number): Promise<Buffer>;
  /** Stream the object from `offset` (default 0) to its end. */
  stream(key: string, offset?: number): AsyncIterable<Uint8Array>;
  /**
   * Optional fast path for big sequential reads: read straight into the caller's buffers (no intermediate
   * chunks). Stores without it are read through stream().
   */
  openReader?(key: string): Promise<RangeReader>;
  /** Size and mtime, or null when there is no such object. */
  stat(key: string): Promise<StoreEntry | null>;
  exists(key: string): Promise<boolean>;
  /** Objects directly under `prefix` ('' for the root), not recursive. Temp files are included. */
  list(prefix?: string): Promise<StoreEntry[]>;
  /** Names of the sub-directories directly under `prefix`. */
  listDirs(prefix?: string): Promise<string[]>;
  /** Remove an object; a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** Child store rooted at `prefix` (e.g. a tag directory under a checkpoints directory). */
  sub(prefix: string): Store;
}

export class AlreadyExistsError extends Error {
  constructor(readonly key: string) {
    super(`${key} already exists`);
    this.name = 'AlreadyExistsError';
  }
}
