/**
 * Settings and plumbing of the S3 store: options, `s3://bucket/prefix` parsing, the SDK client, and turning
 * SDK failures into StoreErrors that name the bucket and key. Nothing here reads the environment: the CLI
 * passes what temporal.config.ts read, and whatever is left unset falls to the SDK's own default chain
 * (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3, profiles, instance roles).
 */
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { CheckpointError, InvalidArgumentError, StoreError, TransientStoreError } from './errors';
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
  /** SDK attempts per request (retries on throttling and network errors). Default 3. */
  maxAttempts?: number;
  /** A ready client (custom middleware, tests). Endpoint, region, credentials and path-style are then ignored. */
  client?: S3Client;
}

export const MIN_PART_SIZE = 5 * 1024 * 1024;

export interface S3Tuning {
  partSize: number;
  uploadConcurrency: number;
  rangeSize: number;
  downloadConcurrency: number;
  confirmExclusiveMs: number | false;
  sendChecksums: boolean;
  sse?: S3Sse;
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
  };
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
    maxAttempts: options.maxAttempts ?? 3,
    requestHandler: { connectionTimeout: 10_000 },
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

/**
 * A StoreError naming the bucket and object (errors of our own pass through). SDK messages carry no
 * secrets; we add none.
 */
export function s3Error(err: unknown, action: string, url: string, bucket: string, key: string): Error {
  if (err instanceof CheckpointError || err instanceof AlreadyExistsError) return err;
  const e = err as SdkErrorShape | undefined;
  const name = errorName(err);
  // SDK errors are named after the S3 code; network errors are plain Errors with a Node code.
  const code = e?.Code ?? e?.code ?? (name !== 'Error' ? name : undefined);
  let message: string;
  if (name === 'NoSuchBucket') {
    message = `bucket "${bucket}" does not exist (${url}); create it first or fix the location`;
  } else if (name !== undefined && ACCESS.has(name)) {
    message = `cannot ${action} ${url}: access denied by the server (${name}); check the S3 credentials`;
  } else if (e?.name === 'CredentialsProviderError') {
    message = `cannot ${action} ${url}: no S3 credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)`;
  } else {
    const detail = e?.message || name || String(err);
    message = `cannot ${action} ${url}: ${detail}${e?.code && !detail.includes(e.code) ? ` (${e.code})` : ''}`;
  }
  return isTransient(err)
    ? new TransientStoreError(message, { file: key, code, cause: err })
    : new StoreError(message, { file: key, code, cause: err });
}
