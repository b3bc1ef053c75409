/**
 * Store over a local directory. Publishing follows the commit protocol: write under a temp name, fsync the
 * file, publish it under its final name, fsync the directory. Exclusive puts publish with link(), which
 * fails when the final name exists — unlike rename(), which would silently replace it.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fs, writeSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { FileDigest } from './checksum';
import { InvalidArgumentError, StoreError, TransientStoreError } from './errors';
import { TEMP_PREFIX } from './names';
import {
  AlreadyExistsError,
  type ByteSource,
  type PutOptions,
  type PutResult,
  type RangeReader,
  type Store,
  type StoreEntry,
} from './store';

const STREAM_CHUNK = 4 << 20;
/** put() starts the disk write-back (fdatasync, not awaited) each time this many bytes have been written. */
const EARLY_FLUSH_BYTES = 64 << 20;
/** One read() call's most (the kernel caps a read near 2 GiB). */
const MAX_READ = 1 << 30;

/**
 * Where put() copies bytes into the kernel: on the thread pool (the default, so that the calling thread can
 * hash the same chunk meanwhile), or on the calling thread itself. The async save thread, which runs at a
 * lower priority than training, asks for the latter: the copies into the page cache then run at its
 * priority too instead of on thread-pool threads that compete with training as equals. Per thread (each
 * worker thread has its own module instance).
 */
let writeOnCallingThread = false;

/** See writeOnCallingThread. For a thread that does nothing but write (the async save thread). */
export function writeOnThisThread(on = true): void {
  writeOnCallingThread = on;
}

export class LocalStore implements Store {
  readonly location: string;

  constructor(root: string) {
    this.location = resolve(root);
  }

  private path(key: string): string {
    if (key === '') return this.location;
    if (key.startsWith('/') || key.split('/').some((part) => part === '..' || part === '.' || part === '')) {
      throw new InvalidArgumentError(
        `store key "${key}" must be a relative path without "." or ".." segments`,
        {
          field: 'key',
        },
      );
    }
    const full = join(this.location, ...key.split('/'));
    if (full !== this.location && !full.startsWith(this.location + sep)) {
      throw new InvalidArgumentError(`store key "${key}" leaves the store root`, { field: 'key' });
    }
    return full;
  }

  async put(key: string, source: ByteSource, options: PutOptions = {}): Promise<PutResult> {
    const final = this.path(key);
    const dir = dirname(final);
    await fs.mkdir(dir, { recursive: true }).catch((err) => {
      throw storeError(err, `cannot create directory ${dir}`, key);
    });
    const temp = join(
      dir,
      `${TEMP_PREFIX}${key.split('/').pop()}.${process.pid}.${randomBytes(4).toString('hex')}`,
    );
    const digest = new FileDigest();
    let handle: fs.FileHandle | undefined;
    try {
      handle = await fs.open(temp, 'wx');
      // Write-back to disk starts every EARLY_FLUSH_BYTES without waiting, so it overlaps the hashing and
      // writing of later chunks and the final fsync has little left to do. Its errors surface below.
      let flushing: Promise<void> | undefined;
      let flushError: unknown;
      let unflushed = 0;
      for await (const chunk of toAsync(source)) {
        if (writeOnCallingThread) {
          digest.update(chunk);
          writeAllHere(handle.fd, chunk);
        } else {
          // The write runs on the thread pool: hash the same (unchanging) bytes meanwhile, then wait for it.
          const writing = writeAll(handle, chunk);
          try {
            digest.update(chunk);
          } finally {
            await writing;
          }
        }
        unflushed += chunk.byteLength;
        if (flushError) throw flushError;
        if (unflushed >= EARLY_FLUSH_BYTES && !flushing) {
          unflushed = 0;
          flushing = handle.datasync().then(
            () => {
              flushing = undefined;
            },
            (err: unknown) => {
              flushing = undefined;
              flushError ??= err;
            },
          );
        }
      }
      await flushing;
      if (flushError) throw flushError;
      await handle.sync();
      await handle.close();
      handle = undefined;
      if (options.exclusive) {
        try {
          await fs.link(temp, final);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new AlreadyExistsError(key);
          throw err;
        }
        await fs.unlink(temp);
      } else {
        await fs.rename(temp, final);
      }
      await fsyncDir(dir);
      return digest.record();
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await fs.unlink(temp).catch(() => undefined);
      if (err instanceof AlreadyExistsError || err instanceof InvalidArgumentError) throw err;
      throw storeError(err, `cannot write ${final}`, key);
    }
  }

  async read(key: string): Promise<Buffer> {
    const p = this.path(key);
    return fs.readFile(p).catch((err) => {
      throw storeError(err, `cannot read ${p}`, key);
    });
  }

  async readRange(key: string, offset: number, length: number): Promise<Buffer> {
    const p = this.path(key);
    let handle: fs.FileHandle | undefined;
    try {
      handle = await fs.open(p, 'r');
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await handle.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got === length ? buf : buf.subarray(0, got);
    } catch (err) {
      throw storeError(err, `cannot read ${p}`, key);
    } finally {
      await handle?.close();
    }
  }

  async *stream(key: string, offset = 0): AsyncIterable<Uint8Array> {
    const p = this.path(key);
    try {
      yield* createReadStream(p, { start: offset, highWaterMark: STREAM_CHUNK }) as AsyncIterable<Buffer>;
    } catch (err) {
      throw storeError(err, `cannot read ${p}`, key);
    }
  }

  async openReader(key: string): Promise<RangeReader> {
    const p = this.path(key);
    const handle = await fs.open(p, 'r').catch((err) => {
      throw storeError(err, `cannot read ${p}`, key);
    });
    return {
      readInto: async (target, position) => {
        let got = 0;
        try {
          while (got < target.byteLength) {
            const length = Math.min(target.byteLength - got, MAX_READ);
            const { bytesRead } = await handle.read(target, got, length, position + got);
            if (bytesRead === 0) break;
            got += bytesRead;
          }
        } catch (err) {
          throw storeError(err, `cannot read ${p}`, key);
        }
        return got;
      },
      // FileHandle.close waits for reads still in flight and is a no-op the second time.
      close: () => handle.close(),
    };
  }

  async stat(key: string): Promise<StoreEntry | null> {
    try {
      const st = await fs.stat(this.path(key));
      if (!st.isFile()) return null;
      return { key, bytes: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      // ENOTDIR: a parent on the path is a file, so there is no object here either.
      if (['ENOENT', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '')) return null;
      throw storeError(err, `cannot stat ${this.path(key)}`, key);
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.stat(key)) !== null;
  }

  async list(prefix = ''): Promise<StoreEntry[]> {
    const dir = this.path(prefix);
    const names = await readdirOrEmpty(dir, prefix);
    const out: StoreEntry[] = [];
    for (const ent of names) {
      if (!ent.isFile()) continue;
      const key = prefix ? `${prefix}/${ent.name}` : ent.name;
      const st = await fs.stat(join(dir, ent.name)).catch(() => null);
      if (st) out.push({ key, bytes: st.size, mtimeMs: st.mtimeMs });
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async listDirs(prefix = ''): Promise<string[]> {
    const names = await readdirOrEmpty(this.path(prefix), prefix);
    return names
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  }

  async delete(key: string): Promise<void> {
    const p = this.path(key);
    try {
      await fs.unlink(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw storeError(err, `cannot delete ${p}`, key);
    }
    // Deletion order is part of the protocol (manifest first), so make each delete durable before the next.
    await fsyncDir(dirname(p));
  }

  sub(prefix: string): Store {
    return new LocalStore(this.path(prefix));
  }
}

async function readdirOrEmpty(dir: string, key: string) {
  try {
    return await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (['ENOENT', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '')) return [];
    throw storeError(err, `cannot list ${dir}`, key);
  }
}

async function writeAll(handle: fs.FileHandle, chunk: Uint8Array): Promise<void> {
  let written = 0;
  while (written < chunk.byteLength) {
    const { bytesWritten } = await handle.write(chunk, written, chunk.byteLength - written);
    written += bytesWritten;
  }
}

function writeAllHere(fd: number, chunk: Uint8Array): void {
  let written = 0;
  while (written < chunk.byteLength) written += writeSync(fd, chunk, written, chunk.byteLength - written);
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function* toAsync(source: ByteSource): AsyncIterable<Uint8Array> {
  if (source instanceof Uint8Array) {
    yield source;
    return;
  }
  yield* source as AsyncIterable<Uint8Array>;
}

const TRANSIENT_FS_CODES = new Set([
  'ENOSPC',
  'EDQUOT',
  'EIO',
  'EAGAIN',
  'EBUSY',
  'ESTALE',
  'ETIMEDOUT',
  'EINTR',
]);

function storeError(err: unknown, message: string, key: string): StoreError {
  if (err instanceof StoreError) return err;
  const code = (err as NodeJS.ErrnoException)?.code;
  const hint = code === 'ENOSPC' ? ' (disk full)' : code === 'EACCES' ? ' (permission denied)' : '';
  const text = `${message}${hint}: ${(err as Error)?.message ?? err}`;
  // Conditions that can pass (space freed, a network filesystem back): activities retry them.
  return code !== undefined && TRANSIENT_FS_CODES.has(code)
    ? new TransientStoreError(text, { file: key, code, cause: err })
    : new StoreError(text, { file: key, code, cause: err });
}
