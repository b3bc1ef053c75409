/**
 * Store over an S3 bucket (AWS S3 or a compatible server) for `s3://bucket/prefix` locations. Registered for
 * the s3 scheme when this module loads, so every function that takes a directory takes an s3:// URL too.
 *
 * S3 publishes an object whole or not at all, so there are no temp objects: a put is one PUT or one
 * multipart upload (s3-upload.ts), and an exclusive put is a conditional write. Reads check the ETag
 * across the ranged GETs of one stream, so an object replaced mid-read is an error, not a mix of two.
 * Modification times come from LastModified (whole seconds), which is what orphan gc compares.
 */
import { inspect } from 'node:util';
import type { ListObjectsV2CommandOutput, S3Client } from '@aws-sdk/client-s3';
import { StoreError } from './errors';
import { registerStoreScheme } from './location';
import {
  createClient,
  httpStatus,
  isInvalidRange,
  isNotFound,
  parseS3Location,
  resolveTuning,
  s3Error,
  sdk,
  type S3StoreOptions,
  type S3Tuning,
  validateKey,
} from './s3-settings';
import { uploadObject } from './s3-upload';
import type { ByteSource, PutOptions, PutResult, Store, StoreEntry } from './store';

export {
  MIN_PART_SIZE,
  parseS3Location,
  SSE_MODES,
  type S3Credentials,
  type S3Location,
  type S3Sse,
  type S3StoreOptions,
  type ServerSideEncryption,
} from './s3-settings';
export { WRITER_TAG } from './s3-upload';

/** One client (connection pool) and its tuning, shared by a store and every sub-store. */
export class S3Connection {
  readonly #options: S3StoreOptions;
  #client: S3Client | undefined;
  readonly tuning: S3Tuning;

  constructor(options: S3StoreOptions = {}) {
    this.#options = { ...options };
    this.tuning = resolveTuning(options);
  }

  /** Created on first request: building a store (e.g. from a config) costs nothing. */
  get client(): S3Client {
    return (this.#client ??= createClient(this.#options));
  }

  /** Close idle sockets (the CLI calls this so the process can exit at once). */
  destroy(): void {
    this.#client?.destroy();
    this.#client = undefined;
  }

  // Credentials live in #options: keep them out of JSON and console output.
  toJSON(): Record<string, unknown> {
    return { endpoint: this.#options.endpoint, region: this.#options.region };
  }
  [inspect.custom](): string {
    return `S3Connection ${JSON.stringify(this.toJSON())}`;
  }
}

export class S3Store implements Store {
  readonly location: string;
  readonly bucket: string;
  /** '' or 'a/b'. */
  readonly prefix: string;
  readonly #conn: S3Connection;

  constructor(url: string, options: S3StoreOptions | S3Connection = {}) {
    const { bucket, prefix } = parseS3Location(url);
    this.bucket = bucket;
    this.prefix = prefix;
    this.location = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
    this.#conn = options instanceof S3Connection ? options : new S3Connection(options);
  }

  get connection(): S3Connection {
    return this.#conn;
  }

  private objectKey(key: string): string {
    validateKey(key);
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  /** Listing prefix of a directory key ('' = the store root), with its trailing slash. */
  private dirPrefix(prefix: string): string {
    const k = prefix === '' ? this.prefix : this.objectKey(prefix);
    return k === '' ? '' : `${k}/`;
  }

  private url(key: string): string {
    return key === '' ? this.location : `${this.location}/${key}`;
  }

  /** `objectKey`: the object's key in the bucket, or for a list the prefix listed (ending in '/', or ''). */
  private fail(err: unknown, action: string, key: string, objectKey = this.objectKey(key)): Error {
    return s3Error(err, action, {
      url: this.url(key),
      bucket: this.bucket,
      key,
      objectKey,
      tuning: this.#conn.tuning,
    });
  }

  async put(key: string, source: ByteSource, options: PutOptions = {}): Promise<PutResult> {
    const objectKey = this.objectKey(key);
    const { client, tuning } = this.#conn;
    return uploadObject(
      { client, bucket: this.bucket, objectKey, key, url: this.url(key), tuning },
      source,
      options.exclusive ?? false,
    );
  }

  async read(key: string): Promise<Buffer> {
    return this.get(key, undefined, 'read');
  }

  async readRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (length <= 0) return Buffer.alloc(0);
    try {
      return await this.get(key, `bytes=${offset}-${offset + length - 1}`, 'read');
    } catch (err) {
      // Like a short read of a file: nothing past the end.
      if (err instanceof StoreError && err.code === 'InvalidRange') return Buffer.alloc(0);
      throw err;
    }
  }

  private async get(
    key: string,
    range: string | undefined,
    action: string,
    ifMatch?: string,
  ): Promise<Buffer> {
    return Buffer.concat(await this.getChunks(key, range, action, ifMatch));
  }

  /**
   * One GET's body as the chunks the socket delivered. Not joined: stream() hands them on as they are, which
   * saves collecting every range into a fresh buffer and copying it again (measured in bench/s3.ts: those
   * copies made 512 MiB of ranged reads cost about 1 s more CPU than one streamed GET).
   */
  private async getChunks(
    key: string,
    range: string | undefined,
    action: string,
    ifMatch?: string,
  ): Promise<Uint8Array[]> {
    const { GetObjectCommand } = sdk();
    try {
      const res = await this.#conn.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.objectKey(key),
          Range: range,
          IfMatch: ifMatch,
        }),
      );
      const chunks: Uint8Array[] = [];
      if (res.Body)
        for await (const chunk of res.Body as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
      return chunks;
    } catch (err) {
      if (isInvalidRange(err))
        throw new StoreError(`${this.url(key)}: range past the end`, { file: key, code: 'InvalidRange' });
      if (ifMatch !== undefined && httpStatus(err) === 412) throw this.replaced(key, err);
      if (isNotFound(err)) throw this.missing(key, err);
      throw this.fail(err, action, key);
    }
  }

  private replaced(key: string, cause: unknown): StoreError {
    return new StoreError(`cannot read ${this.url(key)}: the object was replaced while it was being read`, {
      file: key,
      code: 'PreconditionFailed',
      cause,
    });
  }

  private missing(key: string, cause?: unknown): StoreError {
    return new StoreError(`cannot read ${this.url(key)}: no such object`, {
      file: key,
      code: 'NoSuchKey',
      cause,
    });
  }

  async *stream(key: string, offset = 0): AsyncIterable<Uint8Array> {
    const head = await this.head(key);
    if (!head) throw this.missing(key);
    const { rangeSize, downloadConcurrency } = this.#conn.tuning;
    if (offset >= head.bytes) return;
    if (head.bytes - offset <= rangeSize) {
      yield* this.singleGet(key, offset, head.etag);
      return;
    }
    // Parallel ranged GETs, yielded in order: at most `downloadConcurrency` in flight plus the one being
    // consumed are in memory, whatever the object size.
    const ranges: Array<[number, number]> = [];
    for (let start = offset; start < head.bytes; start += rangeSize) {
      ranges.push([start, Math.min(start + rangeSize, head.bytes) - 1]);
    }
    const window: Array<Promise<Uint8Array[]>> = [];
    let next = 0;
    const fill = () => {
      while (window.length < downloadConcurrency && next < ranges.length) {
        const [a, b] = ranges[next++]!;
        const p = this.getChunks(key, `bytes=${a}-${b}`, 'read', head.etag);
        p.catch(() => undefined); // awaited below in order; this only stops an unhandled rejection
        window.push(p);
      }
    };
    fill();
    while (window.length > 0) {
      const chunks = await window.shift()!;
      fill();
      yield* chunks;
    }
  }

  private async *singleGet(key: string, offset: number, etag: string | undefined): AsyncIterable<Uint8Array> {
    const { GetObjectCommand } = sdk();
    let body: AsyncIterable<Uint8Array> & { destroy?: () => void };
    try {
      const res = await this.#conn.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.objectKey(key),
          Range: offset > 0 ? `bytes=${offset}-` : undefined,
          IfMatch: etag,
        }),
      );
      if (!res.Body) return;
      body = res.Body as unknown as AsyncIterable<Uint8Array> & { destroy?: () => void };
    } catch (err) {
      if (etag !== undefined && httpStatus(err) === 412) throw this.replaced(key, err);
      if (isNotFound(err)) throw this.missing(key, err);
      throw this.fail(err, 'read', key);
    }
    try {
      for await (const chunk of body) yield chunk;
    } catch (err) {
      throw this.fail(err, 'read', key);
    } finally {
      body.destroy?.(); // a consumer that stops early must not leave the socket busy
    }
  }

  private async head(key: string): Promise<{ bytes: number; mtimeMs: number; etag?: string } | null> {
    const { HeadObjectCommand } = sdk();
    try {
      const res = await this.#conn.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }),
      );
      return { bytes: res.ContentLength ?? 0, mtimeMs: res.LastModified?.getTime() ?? 0, etag: res.ETag };
    } catch (err) {
      // HEAD has no body, so a missing bucket is a bare 404 too: that reads as "no such object" here and
      // as a clear NoSuchBucket error from the next list or put.
      if (httpStatus(err) === 404) return null;
      throw this.fail(err, 'stat', key);
    }
  }

  async stat(key: string): Promise<StoreEntry | null> {
    const head = await this.head(key);
    return head && { key, bytes: head.bytes, mtimeMs: head.mtimeMs };
  }

  async exists(key: string): Promise<boolean> {
    return (await this.stat(key)) !== null;
  }

  async list(prefix = ''): Promise<StoreEntry[]> {
    const dir = this.dirPrefix(prefix);
    const rootLength = this.prefix ? this.prefix.length + 1 : 0;
    const out: StoreEntry[] = [];
    await this.listPages(prefix, dir, (page) => {
      for (const obj of page.Contents ?? []) {
        // Keys ending in '/' are "directory" markers some tools create: not files.
        if (!obj.Key || obj.Key.endsWith('/') || obj.Key === dir) continue;
        out.push({
          key: obj.Key.slice(rootLength),
          bytes: obj.Size ?? 0,
          mtimeMs: obj.LastModified?.getTime() ?? 0,
        });
      }
    });
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async listDirs(prefix = ''): Promise<string[]> {
    const dir = this.dirPrefix(prefix);
    const names: string[] = [];
    await this.listPages(prefix, dir, (page) => {
      for (const cp of page.CommonPrefixes ?? []) {
        const name = cp.Prefix?.slice(dir.length).replace(/\/$/, '');
        if (name) names.push(name);
      }
    });
    return names.sort();
  }

  /** One level of ListObjectsV2 (Delimiter '/'), every page: a listing is capped at 1,000 keys a page. */
  private async listPages(
    key: string,
    dir: string,
    onPage: (page: ListObjectsV2CommandOutput) => void,
  ): Promise<void> {
    const { ListObjectsV2Command } = sdk();
    let token: string | undefined;
    try {
      do {
        const page = await this.#conn.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: dir || undefined,
            Delimiter: '/',
            ContinuationToken: token,
          }),
        );
        onPage(page);
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw this.fail(err, 'list', key, dir);
    }
  }

  async delete(key: string): Promise<void> {
    const { DeleteObjectCommand } = sdk();
    try {
      await this.#conn.client.send(
        new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }),
      );
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.fail(err, 'delete', key);
    }
  }

  sub(prefix: string): Store {
    return new S3Store(`${this.location}/${validateKey(prefix)}`, this.#conn);
  }

  toJSON(): Record<string, unknown> {
    return { location: this.location };
  }
  [inspect.custom](): string {
    return `S3Store(${this.location})`;
  }
}

let defaultOptions: S3StoreOptions = {};
let defaultConnection: S3Connection | undefined;

/**
 * Settings for stores opened from s3:// URLs (openStore, every function taking a directory). The CLI calls
 * this with temporal.config.ts's `s3` section; unset fields fall to the SDK's defaults.
 */
export function configureS3(options: S3StoreOptions = {}): void {
  resolveTuning(options); // fail here, not at the first save
  defaultOptions = { ...options };
  // Stores already opened keep their connection; new ones get the new settings.
  defaultConnection = undefined;
}

/** The connection s3:// URLs use (created on first use). */
export function defaultS3Connection(): S3Connection {
  return (defaultConnection ??= new S3Connection(defaultOptions));
}

registerStoreScheme('s3', (url) => new S3Store(url, defaultS3Connection()));
