/**
 * Settings and plumbing of the S3 store: options, `s3://bucket/prefix` parsing, the SDK client, and turning
 * SDK failures into StoreErrors that name the bucket and key. Nothing here reads the environment: the CLI
 * passes what temporal.config.ts read, and whatever is left unset falls to the SDK's own default chain
 * (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3, profiles, instance roles).
 */
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import {
  AccessDeniedError,
  CheckpointError,
  InvalidArgumentError,
  StoreError,
  TransientStoreError,
} from './errors';
import { AlreadyExistsError } from './store';

export type S3Sdk = typeof import('@aws-sdk/client-s3');
let sdkModule: S3Sdk | undefined;

/** Loaded on first use: the SDK takes about half a second to import and local-only runs never need it. */
export function sdk(): S3Sdk {
  return (sdkModule ??= require('@aws-sdk/client-s3') as S3Sdk);
}

export type ServerSideEncryption = 'AES256' | 'aws:kms' | 'aws:kms:dsse';
export const SSE_MODES: readonly ServerSideEncryption[] = ['AES256', 'aws:kms', 'aws:kms:dsse'];

export interface S3Sse {
  serverSideEncryption: ServerSideEncryption;
  /** KMS key for aws:kms / aws:kms:dsse (the bucket's default key when absent). */
  kmsKeyId?: string;
}

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3StoreOptions {
  /** Custom endpoint (MinIO, versitygw, Ceph...). Default: the SDK's (AWS_ENDPOINT_URL_S3, else AWS). */
  endpoint?: string;
  /** Default: the SDK's chain (AWS_REGION, profile), else us-east-1. */
  region?: string;
  /** Path-style addressing (http://host/bucket/key). Default: on with a custom endpoint, else the SDK's. */
  forcePathStyle?: boolean;
  /** Default: the SDK's credential chain. */
  credentials?: S3Credentials;
  sse?: S3Sse;
  /** Multipart part size in bytes (min 5 MiB, the S3 limit). Sources up to this size use one PUT. Default 16 MiB. */
  partSize?: number;
  /** Parts uploaded at once. Memory used by a put is about (uploadConcurrency + 1) x partSize. Default 4. */
  uploadConcurrency?: number;
  /** Objects larger than this are streamed with parallel ranged GETs of this size. Default 8 MiB. */
  rangeSize?: number;
  /** Ranged GETs in flight while streaming. Default 4. */
  downloadConcurrency?: number;
  /**
   * After an exclusive put, wait this long and read the object's writer tag back; `false` skips the check.
   * Needed for servers whose If-None-Match is check-then-write (versitygw): see s3-upload.ts. Default 50 ms.
   */
  confirmExclusiveMs?: number | false;
  /** Send SHA-256 checksums with uploads so the server rejects bytes damaged in transit. Default true. */
  sendChecksums?: boolean;
  /** SDK attempts per request (retries on throttling, network errors and timeouts). Default 3. */
  maxAttempts?: number;
  /**
   * How long one attempt of one S3 call may wait: for the server's answer to begin, and for the connection
   * to move at all while a body goes up or down. Past it the attempt fails with a timeout, which the SDK
   * retries, so a server that accepts connections and never answers fails a call after about
   * maxAttempts x requestTimeoutMs. A call that sends a body may take UPLOAD_MS_PER_MIB longer per MiB
   * (a slow link is not a dead server; a stalled one is caught by the idle limit). Default 30 s.
   */
  requestTimeoutMs?: number;
  /** A ready client (custom middleware, tests). Endpoint, region, credentials and path-style are then ignored. */
  client?: S3Client;
}

export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Extra time an upload attempt gets per MiB of body: 4 s, i.e. a link down to about 2 Mbit/s. */
export const UPLOAD_MS_PER_MIB = 4_000;

export interface S3Tuning {
  partSize: number;
  uploadConcurrency: number;
  rangeSize: number;
  downloadConcurrency: number;
  confirmExclusiveMs: number | false;
  sendChecksums: boolean;
  sse?: S3Sse;
  requestTimeoutMs: number;
  maxAttempts: number;
  /** Where requests go, for messages: the endpoint URL, or AWS's default. */
  endpointLabel: string;
}

export function resolveTuning(options: S3StoreOptions): S3Tuning {
  const positive = (value: number | undefined, fallback: number, field: string, min = 1): number => {
    const v = value ?? fallback;
    if (!Number.isSafeInteger(v) || v < min) {
      throw new InvalidArgumentError(`S3 option ${field} must be an integer >= ${min}, got ${value}`, {
        field,
      });
    }
    return v;
  };
  const confirm = options.confirmExclusiveMs ?? 50;
  if (confirm !== false && !(Number.isFinite(confirm) && confirm >= 0)) {
    throw new InvalidArgumentError(`S3 option confirmExclusiveMs must be >= 0 or false, got ${confirm}`, {
      field: 'confirmExclusiveMs',
    });
  }
  if (options.sse && !SSE_MODES.includes(options.sse.serverSideEncryption)) {
    throw new InvalidArgumentError(
      `S3 server-side encryption must be one of ${SSE_MODES.join(', ')}, got "${options.sse.serverSideEncryption}"`,
      { field: 'sse' },
    );
  }
  return {
    partSize: positive(options.partSize, 16 << 20, 'partSize', MIN_PART_SIZE),
    uploadConcurrency: positive(options.uploadConcurrency, 4, 'uploadConcurrency'),
    rangeSize: positive(options.rangeSize, 8 << 20, 'rangeSize'),
    downloadConcurrency: positive(options.downloadConcurrency, 4, 'downloadConcurrency'),
    confirmExclusiveMs: confirm,
    sendChecksums: options.sendChecksums ?? true,
    sse: options.sse,
    requestTimeoutMs: positive(options.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 'requestTimeoutMs'),
    maxAttempts: positive(options.maxAttempts, 3, 'maxAttempts'),
    endpointLabel: options.endpoint ?? (options.client ? 'the S3 endpoint' : 'the AWS S3 endpoint'),
  };
}

/** The time limit of one attempt of a call that sends `bodyBytes` (see requestTimeoutMs). */
export function attemptTimeout(tuning: S3Tuning, bodyBytes = 0): number {
  return tuning.requestTimeoutMs + Math.ceil(bodyBytes / (1 << 20)) * UPLOAD_MS_PER_MIB;
}

let regionFallback: Promise<string> | undefined;

/** The SDK's region chain (env, profile), or us-east-1 where it finds none instead of failing every request. */
function defaultRegion(): Promise<string> {
  return (regionFallback ??= (async () => {
    try {
      return await new (sdk().S3Client)({}).config.region();
    } catch {
      return 'us-east-1';
    }
  })());
}

export function createClient(options: S3StoreOptions): S3Client {
  if (options.client) return options.client;
  const { requestTimeoutMs, maxAttempts } = resolveTuning(options);
  if (options.endpoint !== undefined && !/^https?:\/\/[^/]/i.test(options.endpoint)) {
    throw new InvalidArgumentError(`S3 endpoint must be an http(s) URL, got "${options.endpoint}"`, {
      field: 'endpoint',
    });
  }
  const config: S3ClientConfig = {
    region: options.region ?? defaultRegion,
    // Custom endpoints are usually one host (localhost, an IP) without per-bucket DNS names.
    forcePathStyle: options.forcePathStyle ?? (options.endpoint !== undefined ? true : undefined),
    // The SDK's default CRC checksums (aws-chunked trailers) are not understood by every S3-compatible
    // server; we send SHA-256 checksums ourselves where it matters (s3-upload.ts).
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts,
    // Without these an attempt against a server that accepts the connection and then says nothing waits
    // forever. requestTimeout runs until the answer begins (a throw only with throwOnRequestTimeout: the
    // SDK merely warns by default); socketTimeout fails a connection idle that long, while a body goes
    // up or comes down. Both errors are TimeoutErrors, which the SDK retries up to maxAttempts.
    requestHandler: {
      connectionTimeout: Math.min(10_000, requestTimeoutMs),
      requestTimeout: requestTimeoutMs,
      throwOnRequestTimeout: true,
      socketTimeout: requestTimeoutMs,
    },
  };
  if (options.endpoint !== undefined) config.endpoint = options.endpoint;
  if (options.credentials) config.credentials = { ...options.credentials };
  return new (sdk().S3Client)(config);
}

export interface S3Location {
  bucket: string;
  /** '' or 'a/b' (no leading or trailing slash). */
  prefix: string;
}

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** `s3://bucket[/prefix]` → bucket and prefix; rejects bucket names S3 does not allow and traversal. */
export function parseS3Location(url: string): S3Location {
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/i.exec(url);
  if (!m) throw new InvalidArgumentError(`"${url}" is not an s3://bucket/prefix location`, { field: 'dir' });
  const bucket = m[1] ?? '';
  if (!BUCKET_RE.test(bucket)) {
    throw new InvalidArgumentError(
      `"${bucket}" in ${url} is not a valid bucket name (3-63 lowercase letters, digits, '.' and '-')`,
      { field: 'dir' },
    );
  }
  const prefix = (m[2] ?? '').replace(/\/+$/, '');
  if (prefix !== '') validateKey(prefix);
  return { bucket, prefix };
}

/** Keys follow LocalStore's rules so a layout that works on disk works on S3 and back. */
export function validateKey(key: string): string {
  if (key.startsWith('/') || key.split('/').some((part) => part === '..' || part === '.' || part === '')) {
    throw new InvalidArgumentError(
      `store key "${key}" must be a relative path without "." or ".." segments`,
      {
        field: 'key',
      },
    );
  }
  return key;
}

interface SdkErrorShape {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

export function httpStatus(err: unknown): number | undefined {
  return (err as SdkErrorShape | undefined)?.$metadata?.httpStatusCode;
}

function errorName(err: unknown): string | undefined {
  const e = err as SdkErrorShape | undefined;
  return e?.Code ?? e?.name;
}

export function isNotFound(err: unknown): boolean {
  const name = errorName(err);
  return name === 'NoSuchKey' || name === 'NotFound' || (httpStatus(err) === 404 && name !== 'NoSuchBucket');
}

/** 412: the object exists. 409: AWS refused because another conditional write of the key was in flight. */
export function isConditionFailed(err: unknown): boolean {
  const name = errorName(err);
  const status = httpStatus(err);
  return (
    status === 412 || name === 'PreconditionFailed' || status === 409 || name === 'ConditionalRequestConflict'
  );
}

export function isInvalidRange(err: unknown): boolean {
  return httpStatus(err) === 416 || errorName(err) === 'InvalidRange';
}

const ACCESS = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'Forbidden',
]);

/** Node network error codes and S3 error names that describe a failure that may pass on a retry. */
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'InternalError',
  'ServiceUnavailable',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestTimeoutException',
]);

/** Whether an S3 call failed for a reason that may pass (network, timeout, 5xx, throttling). */
export function isTransient(err: unknown): boolean {
  const e = err as SdkErrorShape | undefined;
  const status = httpStatus(err);
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  for (const c of [e?.code, e?.Code, e?.name]) if (c && TRANSIENT_CODES.has(c)) return true;
  return /socket hang up|ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT/.test(e?.message ?? '');
}

/** Whether the server refused the request for its credentials or a policy (a HEAD's 403 has no code). */
export function isAccessDenied(err: unknown): boolean {
  const name = errorName(err);
  if (name !== undefined && ACCESS.has(name)) return true;
  const status = httpStatus(err);
  return (status === 403 || status === 401) && !isTransient(err);
}

function isTimeout(err: unknown): boolean {
  const e = err as SdkErrorShape | undefined;
  return e?.name === 'TimeoutError' || e?.code === 'ETIMEDOUT';
}

/** Where a failed call went, for its error: the object, and the server with its time limit. */
export interface S3ErrorTarget {
  url: string;
  bucket: string;
  /** Key relative to the store (the error's `file`). */
  key: string;
  /** Full object key in the bucket; for a list, the prefix (ending in '/', or '' for the whole bucket). */
  objectKey: string;
  tuning?: Pick<S3Tuning, 'endpointLabel' | 'requestTimeoutMs'>;
}

/**
 * A StoreError naming the bucket and object (errors of our own pass through): AccessDeniedError for a 403,
 * TransientStoreError for what may pass, and a failure with no answer from the server names the endpoint.
 * SDK messages carry no secrets; we add none.
 */
export function s3Error(err: unknown, action: string, target: S3ErrorTarget): Error {
  if (err instanceof CheckpointError || err instanceof AlreadyExistsError) return err;
  const { url, bucket, key, objectKey, tuning } = target;
  const e = err as SdkErrorShape | undefined;
  const name = errorName(err);
  // SDK errors are named after the S3 code; network errors are plain Errors with a Node code. A HEAD's
  // error has no body, hence no code: the SDK calls it "Unknown" (status 403: "UnknownError").
  const code = e?.Code ?? e?.code ?? (name !== 'Error' && name !== 'Unknown' ? name : undefined);
  const endpoint = tuning?.endpointLabel ?? 'the S3 endpoint';
  if (name === 'NoSuchBucket') {
    const message = `bucket "${bucket}" does not exist (${url}); create it first or fix the location`;
    return new StoreError(message, { file: key, code, cause: err });
  }
  if (isAccessDenied(err)) {
    const what =
      objectKey === ''
        ? `bucket "${bucket}"`
        : `${objectKey.endsWith('/') ? 'prefix' : 'key'} "${objectKey}" in bucket "${bucket}"`;
    const why = name !== undefined && ACCESS.has(name) ? name : `HTTP ${httpStatus(err)}, no detail`;
    return new AccessDeniedError(
      `cannot ${action} ${url}: access denied to ${what} by ${endpoint} (${why}); check the S3 credentials and the bucket policy`,
      { file: key, code: code ?? 'AccessDenied', cause: err },
    );
  }
  let message: string;
  if (e?.name === 'CredentialsProviderError') {
    message = `cannot ${action} ${url}: no S3 credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)`;
  } else if (isTimeout(err) && httpStatus(err) === undefined) {
    const attempts = (err as { $metadata?: { attempts?: number } }).$metadata?.attempts;
    const limit = tuning ? ` within ${tuning.requestTimeoutMs / 1000} s` : '';
    message = `cannot ${action} ${url}: no answer from ${endpoint}${limit}${attempts ? ` (${attempts} attempts)` : ''}`;
  } else {
    const detail = e?.message || name || String(err);
    message = `cannot ${action} ${url}: ${detail}${e?.code && !detail.includes(e.code) ? ` (${e.code})` : ''}`;
    // No HTTP answer at all (refused, reset, unreachable): say which server was tried.
    if (httpStatus(err) === undefined && isTransient(err)) message += ` [${endpoint}]`;
  }
  return isTransient(err)
    ? new TransientStoreError(message, { file: key, code, cause: err })
    : new StoreError(message, { file: key, code, cause: err });
}
