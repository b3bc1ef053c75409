/**
 * Uploads for the S3 store. A source up to one part is sent with a single PUT; a larger one with a
 * multipart upload whose parts go up in parallel (bounded), re-chunked from the source as it arrives, so
 * memory stays at about (concurrency + 1) parts whatever the file size. The CRC-32 of the whole object is
 * computed on the way and returned. A failed multipart upload is aborted (best effort: a dead server
 * cannot be told, so a bucket lifecycle rule AbortIncompleteMultipartUpload should clean those up).
 *
 * No-replace puts use a conditional write (If-None-Match: *) on PutObject and CompleteMultipartUpload.
 * AWS S3 evaluates it atomically. versitygw v1.7 (posix) honours it, but checks before it writes and then
 * publishes by rename: two writers whose requests overlap can both be told "200 OK", and the later one's
 * bytes win. Measured: 23 of 100 racing pairs both succeeded. So every exclusive put carries a random
 * writer tag in its metadata, and after it succeeds we wait `confirmExclusiveMs` and read the tag back: a
 * writer that finds another tag lost the race and gets AlreadyExistsError, just as with an atomic server.
 * Racing the same test 300 times with 3 writers, a 10 ms wait already left exactly one winner every time;
 * the default is 50 ms. The limit that remains: a competing request still in flight after that wait (a
 * stalled server, a huge multipart completion) can still overwrite the winner. The tag also settles a 412
 * that answers an SDK retry of our own write that had landed: the object is ours, the put succeeded.
 * An exclusive put also HEADs the key first: an existing object is refused before any byte is read or
 * sent, and on a server that ignores If-None-Match altogether a sequential replace is still refused.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { CompletedPart, S3Client } from '@aws-sdk/client-s3';
import { FileDigest, type FileRecord } from './checksum';
import { StoreError } from './errors';
import { attemptTimeout, isConditionFailed, isNotFound, s3Error, sdk, type S3Tuning } from './s3-settings';
import { AlreadyExistsError, type ByteSource, type PutResult } from './store';

/** Metadata key (x-amz-meta-ckpt-writer) holding the tag of the put that wrote the object. */
export const WRITER_TAG = 'ckpt-writer';
const MAX_PARTS = 10_000;
/** Part size doubles every this many parts, so a source of unknown length never runs out of part numbers. */
const PARTS_PER_SIZE = 1_000;

export interface UploadTarget {
  client: S3Client;
  bucket: string;
  /** Full object key in the bucket. */
  objectKey: string;
  /** Key relative to the store, for errors. */
  key: string;
  url: string;
  tuning: S3Tuning;
}

export async function uploadObject(
  t: UploadTarget,
  source: ByteSource,
  exclusive: boolean,
): Promise<PutResult> {
  const digest = new FileDigest();
  const parts = rechunk(
    source,
    (n) => partSizeFor(t.tuning.partSize, n),
    (chunk) => digest.update(chunk),
  );
  const it = parts[Symbol.asyncIterator]();
  const tag = randomBytes(12).toString('hex');
  try {
    // Refuse an existing object before reading the source: no upload of a large file just to be told
    // 412 at completion, and a server that ignores If-None-Match still refuses a sequential replace.
    if (exclusive && (await writerOf(t)) !== undefined) throw new AlreadyExistsError(t.key);
    const first = await it.next();
    const second = first.done ? first : await it.next();
    if (second.done) {
      const body = first.done ? Buffer.alloc(0) : first.value;
      const record = digest.record();
      await putSingle(t, body, record, exclusive ? tag : null);
      return record;
    }
    await putMultipart(t, [first.value as Buffer, second.value], it, exclusive ? tag : null);
    return digest.record();
  } catch (err) {
    await it.return?.(undefined);
    throw s3Error(err, 'write', t);
  }
}

function partSizeFor(base: number, partNumber: number): number {
  return base * 2 ** Math.floor((partNumber - 1) / PARTS_PER_SIZE);
}

function sseParams(t: UploadTarget) {
  const sse = t.tuning.sse;
  if (!sse) return {};
  return { ServerSideEncryption: sse.serverSideEncryption, SSEKMSKeyId: sse.kmsKeyId };
}

async function putSingle(
  t: UploadTarget,
  body: Buffer,
  record: FileRecord,
  tag: string | null,
): Promise<void> {
  const { PutObjectCommand } = sdk();
  const send = () =>
    t.client.send(
      new PutObjectCommand({
        Bucket: t.bucket,
        Key: t.objectKey,
        Body: body,
        ContentLength: body.byteLength,
        // The object's CRC-32, which the server checks and then reports for the whole object (HEAD).
        ChecksumCRC32: t.tuning.sendChecksums
          ? Buffer.from(record.crc32!, 'hex').toString('base64')
          : undefined,
        ...(tag ? { IfNoneMatch: '*', Metadata: { [WRITER_TAG]: tag } } : {}),
        ...sseParams(t),
      }),
      { requestTimeout: attemptTimeout(t.tuning, body.byteLength) },
    );
  if (tag) await conditional(t, tag, send);
  else await send();
}

async function putMultipart(
  t: UploadTarget,
  firstParts: Buffer[],
  rest: AsyncIterator<Buffer>,
  tag: string | null,
): Promise<void> {
  const { CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand } = sdk();
  const checksums = t.tuning.sendChecksums;
  const created = await t.client.send(
    new CreateMultipartUploadCommand({
      Bucket: t.bucket,
      Key: t.objectKey,
      ChecksumAlgorithm: checksums ? 'SHA256' : undefined,
      ...(tag ? { Metadata: { [WRITER_TAG]: tag } } : {}),
      ...sseParams(t),
    }),
  );
  const uploadId = created.UploadId;
  if (!uploadId)
    throw new StoreError(`cannot write ${t.url}: the server returned no multipart upload id`, {
      file: t.key,
    });

  const completed: CompletedPart[] = [];
  const inflight = new Set<Promise<void>>();
  let failure: { err: unknown } | null = null;
  let partNumber = 0;
  const start = (body: Buffer) => {
    const n = ++partNumber;
    if (n > MAX_PARTS)
      throw new StoreError(`cannot write ${t.url}: more than ${MAX_PARTS} parts`, { file: t.key });
    const sha = checksums ? createHash('sha256').update(body).digest('base64') : undefined;
    const job: Promise<void> = t.client
      .send(
        new UploadPartCommand({
          Bucket: t.bucket,
          Key: t.objectKey,
          UploadId: uploadId,
          PartNumber: n,
          Body: body,
          ContentLength: body.byteLength,
          ChecksumSHA256: sha,
        }),
        { requestTimeout: attemptTimeout(t.tuning, body.byteLength) },
      )
      .then(
        (res) => {
          completed[n - 1] = { PartNumber: n, ETag: res.ETag, ChecksumSHA256: res.ChecksumSHA256 ?? sha };
        },
        (err: unknown) => {
          failure ??= { err };
        },
      )
      .finally(() => inflight.delete(job));
    inflight.add(job);
  };

  try {
    const pending = [...firstParts];
    for (;;) {
      if (failure) break;
      let body = pending.shift();
      if (body === undefined) {
        const next = await rest.next();
        if (next.done) break;
        body = next.value;
      }
      start(body);
      // Bounded memory: wait for a slot before reading (and buffering) the next part.
      while (inflight.size >= t.tuning.uploadConcurrency && !failure) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    if (failure) throw (failure as { err: unknown }).err;
    const complete = () =>
      t.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: t.bucket,
          Key: t.objectKey,
          UploadId: uploadId,
          MultipartUpload: { Parts: completed },
          ...(tag ? { IfNoneMatch: '*' } : {}),
        }),
      );
    if (tag) await conditional(t, tag, complete);
    else await complete();
  } catch (err) {
    await Promise.allSettled(inflight);
    await abort(t, uploadId);
    throw err;
  }
}

async function abort(t: UploadTarget, uploadId: string): Promise<void> {
  const { AbortMultipartUploadCommand } = sdk();
  // Best effort: after a refused completion the upload still holds its parts; after a crash there is
  // nobody to tell, and the bucket's lifecycle rule has to collect them. One time limit in all, retries
  // included: a put that failed because the server stopped answering must not wait for it again.
  await t.client
    .send(new AbortMultipartUploadCommand({ Bucket: t.bucket, Key: t.objectKey, UploadId: uploadId }), {
      abortSignal: AbortSignal.timeout(t.tuning.requestTimeoutMs),
    })
    .catch(() => undefined);
}

/** Run a conditional write and decide, by the writer tag, whether this put won. See the file comment. */
async function conditional(t: UploadTarget, tag: string, write: () => Promise<unknown>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await write();
      break;
    } catch (err) {
      if (!isConditionFailed(err)) throw err;
      const writer = await writerOf(t);
      if (writer === tag) return; // our own earlier attempt landed and the SDK retried it
      if (writer !== undefined) throw new AlreadyExistsError(t.key);
      // Refused, yet there is no object: AWS's 409 for a concurrent conditional write that then failed,
      // or the object was deleted since. Nobody holds the key, so try again.
      if (attempt >= 3) {
        throw new StoreError(`cannot write ${t.url}: conditional write kept conflicting`, {
          file: t.key,
          code: 'Conflict',
        });
      }
      await sleep(50 * attempt);
    }
  }
  const wait = t.tuning.confirmExclusiveMs;
  if (wait === false) return;
  if (wait > 0) await sleep(wait);
  const writer = await writerOf(t);
  if (writer === tag) return;
  if (writer === undefined) {
    throw new StoreError(`cannot write ${t.url}: the object was deleted right after it was written`, {
      file: t.key,
      code: 'NoSuchKey',
    });
  }
  throw new AlreadyExistsError(t.key);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The object's writer tag: undefined when there is no object, null when it has no tag. */
async function writerOf(t: UploadTarget): Promise<string | null | undefined> {
  const { HeadObjectCommand } = sdk();
  try {
    const head = await t.client.send(new HeadObjectCommand({ Bucket: t.bucket, Key: t.objectKey }));
    return head.Metadata?.[WRITER_TAG] ?? null;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Re-chunk a byte source into parts of `sizeFor(n)` bytes (the last one shorter; one empty part for an
 * empty source), handing every source chunk to `onChunk` in order (hashing). Chunks are held by
 * reference until their part is full and then copied once, so a small object never costs a part-sized
 * buffer; like any async-iterable consumer, this expects producers not to mutate a chunk once yielded.
 */
export async function* rechunk(
  source: ByteSource,
  sizeFor: (partNumber: number) => number,
  onChunk: (chunk: Uint8Array) => void,
): AsyncGenerator<Buffer> {
  let n = 1;
  let target = sizeFor(n);
  let held: Uint8Array[] = [];
  let fill = 0;
  for await (const chunk of toAsync(source)) {
    onChunk(chunk);
    let off = 0;
    while (off < chunk.byteLength) {
      const take = Math.min(target - fill, chunk.byteLength - off);
      held.push(off === 0 && take === chunk.byteLength ? chunk : chunk.subarray(off, off + take));
      fill += take;
      off += take;
      if (fill === target) {
        yield Buffer.concat(held, fill);
        n++;
        target = sizeFor(n);
        held = [];
        fill = 0;
      }
    }
  }
  if (fill > 0 || n === 1) yield Buffer.concat(held, fill);
}

async function* toAsync(source: ByteSource): AsyncIterable<Uint8Array> {
  if (source instanceof Uint8Array) {
    yield source;
    return;
  }
  yield* source as AsyncIterable<Uint8Array>;
}
