/**
 * The one place that turns the environment into typed settings. Defaults work on a laptop with no setup.
 * Only cli/, workers/ and activities/ import this file; the checkpoint, model and train layers take their
 * settings as arguments, and workflows receive theirs in their input (their sandbox has no environment).
 *
 * Environment overrides:
 *   CKPT_ROOT            store root for checkpoints (a directory, or s3://bucket/prefix)   default ./checkpoints
 *   CKPT_SOURCES         extra or replaced sources: "name=dir,name2=dir2"                  default base, sft, rl
 *   CKPT_BACKEND         force a compute backend: tensorflow-gpu | tensorflow | wasm | cpu
 *   CKPT_LOG_LEVEL       pino level (debug, info, warn, error)                              default info
 *   CKPT_LOG_ALL_RANKS   1 = every rank logs, tagged with its rank (default: rank 0 only)
 *   CKPT_LOG_FORMAT      text (short lines, the CLI's default) or json (pino lines); `ckpt worker`
 *                        defaults to text when stderr is a terminal, json otherwise
 *   CKPT_GC_GRACE        grace period before orphan files are collected, e.g. 30m, 1h, 2d   default 1h
 *   CKPT_WRITER_TTL_MS   length of a writer lease (checkpoint/writer.ts reads it), ms          default 30000
 *   CKPT_CLOCK_SKEW_MS   clock allowance between hosts for writer leases, ms                 default 2000
 *
 * What a worker may touch (docs/security.md); entries separated by commas:
 *   CKPT_ALLOWED_ROOTS   checkpoint locations activities may read and write: folders, s3://bucket/prefix
 *                        default CKPT_ROOT (the configured store root)
 *   CKPT_ALLOWED_PROGRAM_ROOTS  folders whose modules a pipeline may name as its program by path
 *                        default none (only programs built in or registered on the worker by name)
 *
 * Worker metrics (docs/observability.md):
 *   CKPT_METRICS_PORT    `ckpt worker` serves Prometheus metrics at GET /metrics on this port   default off
 *   CKPT_SDK_METRICS_PORT  `ckpt worker` exports the Temporal SDK's own metrics on this port    default off
 *   CKPT_METRICS_HOST    the address both listen on (0.0.0.0: every interface)    default 127.0.0.1
 *
 * S3 (s3:// locations; S3 credentials are never read here: the AWS SDK's chain finds them, i.e.
 * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or an instance role, so they never enter our
 * settings or logs):
 *   CKPT_S3_ENDPOINT     S3-compatible endpoint URL       default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS
 *   CKPT_S3_REGION       default AWS_REGION, AWS_DEFAULT_REGION, else us-east-1
 *   CKPT_S3_FORCE_PATH_STYLE  1/0: http://host/bucket/key addressing     default 1 with a custom endpoint
 *   CKPT_S3_SSE          server-side encryption: AES256 | aws:kms | aws:kms:dsse      default none (bucket's)
 *   CKPT_S3_SSE_KMS_KEY_ID  KMS key for aws:kms (implies aws:kms when CKPT_S3_SSE is unset)
 *   CKPT_S3_REQUEST_TIMEOUT  limit of one attempt of one S3 call (no answer, or a connection idle that
 *                        long); 3 attempts, so a silent server fails a call in about 3x this   default 30s
 *
 * Temporal (the connection goes through @temporalio/envconfig, so TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
 * TEMPORAL_PROFILE, TEMPORAL_API_KEY, TEMPORAL_TLS_* and the TOML config file all work as in the CLI):
 *   CKPT_TASK_QUEUE_TRAIN     task queue of training workers                               default ckpt-train
 *   CKPT_TASK_QUEUE_CONTROL   task queue of workflows and light activities                 default ckpt-control
 *   CKPT_HEARTBEAT_TIMEOUT    how soon a dead training worker is noticed                   default 30s
 *   CKPT_SEGMENT_TIMEOUT      start-to-close limit of one training segment                 default 24h
 *   CKPT_MAX_ATTEMPTS         attempts per activity before the pipeline fails              default 10
 *   CKPT_TRAIN_SLOTS          segments one training worker runs at once                    default: one per GPU, else 1
 *   CKPT_GPUS                 GPUs of a training worker, one slot each (0,1 | auto | none)  default auto (nvidia-smi)
 *   CKPT_WARM_CHILD           0: no warm standby child on training workers (activities/child.ts) default on
 *   CKPT_STICKY_SEGMENTS      0: no sticky segments (a run's next segment on the worker that keeps its
 *                             state in memory, activities/sticky.ts)                      default on
 *   CKPT_STICKY_IDLE          ms an idle sticky child keeps a run's state before it exits   default 300000
 *   CKPT_UI_ADDRESS           Temporal Web UI base address, for links                      default http://localhost:8233
 *
 * Payload encryption (activities/payload-codec.ts, docs/security.md):
 *   CKPT_CODEC_KEYS      "id:base64key,id2:base64key" (32-byte AES-256 keys); the first encrypts, all decrypt
 *   CKPT_CODEC_KEY_FILE  a file of such entries, one a line (# comments); used when CKPT_CODEC_KEYS is unset
 *   CKPT_CODEC_AUTH      `ckpt codec-server` answers only requests whose Authorization header is this value
 */
import { readFileSync } from 'node:fs';
import { loadClientConnectConfig, type ClientConnectConfig } from '@temporalio/envconfig';
import * as checkpointApi from './checkpoint';
import {
  absoluteLocation,
  checkLocation,
  errorClasses,
  InvalidArgumentError,
  SSE_MODES,
  validateName,
  type RetentionPolicy,
  type S3Sse,
  type ServerSideEncryption,
} from './checkpoint';
import * as modelErrors from './model/errors';
import * as distErrors from './train/dist/errors';
import * as programErrors from './program/errors';

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

export interface CkptConfig {
  storeRoot: string;
  /** Source name → directory under the store root (nanochat's base/sft/rl map, but configurable). */
  sources: Record<string, string>;
  backend?: BackendName;
  logLevel: string;
  logAllRanks: boolean;
  /** 'text' for people (the CLI's default), 'json' for log pipelines (workers' default). */
  logFormat: 'text' | 'json';
  /** CKPT_LOG_FORMAT was set: it wins over a command's own default (`ckpt worker`: by the terminal). */
  logFormatExplicit: boolean;
  /** Port of a worker's Prometheus endpoint (GET /metrics); unset: none. */
  metricsPort?: number;
  /** Port of the Temporal SDK's own Prometheus exporter in a worker; unset: none. */
  sdkMetricsPort?: number;
  /** Address both metrics endpoints listen on; unset: workers/metrics.ts's default (this host only). */
  metricsHost?: string;
  /** The Authorization header value `ckpt codec-server` requires (CKPT_CODEC_AUTH); unset: none required. */
  codecAuth?: string;
  gcGraceMs: number;
  /** Used by pipelines and `ckpt prune` when no policy flag is given. */
  retention: RetentionPolicy;
  /** Settings for s3:// locations (pass to configureS3). */
  s3: S3Config;
  temporal: TemporalSettings;
}

/** Activity timeouts and retries; passed to workflows in their input (their sandbox has no environment). */
export interface ActivityPolicy {
  heartbeatTimeoutMs: number;
  segmentTimeoutMs: number;
  lightTimeoutMs: number;
  maximumAttempts: number;
  initialRetryMs: number;
  maximumRetryMs: number;
}

/** Payload encryption keys by id; `active` encrypts, every key decrypts (rotation by id). */
export interface CodecKeys {
  active: string;
  keys: Record<string, Buffer>;
}

export interface TemporalSettings {
  connect: ClientConnectConfig;
  /** Encrypt payloads (activities/payload-codec.ts); unset: payloads go in clear. */
  codecKeys?: CodecKeys;
  namespace: string;
  taskQueues: { train: string; control: string };
  activities: ActivityPolicy;
  /** Segments a training worker runs at once; unset: one per GPU (CKPT_GPUS), else 1. */
  trainSlots?: number;
  /** Training workers keep a run's state between its segments and poll a queue of their own for them. */
  stickySegments: boolean;
  uiAddress: string;
}

/**
 * Every error class of the library with its decision (`retryable`, on the class): found among the exports
 * of the layers that define them, so a new class is in the table without being listed anywhere.
 */
export const ERROR_CLASSES = errorClasses(checkpointApi, modelErrors, distErrors, programErrors);

/**
 * Error types that retrying cannot fix (bad input; an incompatible, corrupt or already committed
 * checkpoint): the classes whose `retryable` is false, for the workflows' nonRetryableErrorTypes. The
 * activities mark each failure themselves (activities/failure.ts); the list also stops a failure of these
 * types that was thrown without that flag (a user's own activity). A class whose instances differ by cause
 * (RendezvousError) is not listed: its failures carry their own flag.
 */
export const NON_RETRYABLE_ERRORS: string[] = ERROR_CLASSES.filter((c) => !c.retryable).map((c) => c.name);

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const text = env[name]?.trim();
  if (!text) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError(`${name} must be a positive integer, got "${text}"`, { field: name });
  }
  return n;
}

/** A TCP port number (1-65535) from text; a typed error naming `field` otherwise. */
export function parsePort(text: string, field: string): number {
  const n = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || n < 1 || n > 65535) {
    throw new InvalidArgumentError(`${field} must be a port number (1-65535), got "${text}"`, { field });
  }
  return n;
}

function port(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const text = env[name]?.trim();
  return text ? parsePort(text, name) : undefined;
}

export function loadTemporalSettings(env: NodeJS.ProcessEnv = process.env): TemporalSettings {
  const overrides = Object.fromEntries(
    Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined),
  );
  let connect: ClientConnectConfig;
  try {
    connect = loadClientConnectConfig({ overrideEnvVars: overrides });
  } catch (err) {
    throw new InvalidArgumentError(`Temporal connection settings: ${(err as Error).message}`, {
      field: 'TEMPORAL_*',
    });
  }
  connect.connectionOptions.address ??= 'localhost:7233';
  const duration = (name: string, fallback: string) => parseDuration(env[name] ?? fallback, name);
  return {
    connect,
    namespace: connect.namespace ?? 'default',
    taskQueues: {
      train: env.CKPT_TASK_QUEUE_TRAIN?.trim() || 'ckpt-train',
      control: env.CKPT_TASK_QUEUE_CONTROL?.trim() || 'ckpt-control',
    },
    activities: {
      heartbeatTimeoutMs: duration('CKPT_HEARTBEAT_TIMEOUT', '30s'),
      segmentTimeoutMs: duration('CKPT_SEGMENT_TIMEOUT', '24h'),
      lightTimeoutMs: duration('CKPT_LIGHT_TIMEOUT', '10m'),
      maximumAttempts: positiveInt(env, 'CKPT_MAX_ATTEMPTS', 10),
      initialRetryMs: duration('CKPT_RETRY_INITIAL', '1s'),
      maximumRetryMs: duration('CKPT_RETRY_MAX', '30s'),
    },
    ...(env.CKPT_TRAIN_SLOTS !== undefined ? { trainSlots: positiveInt(env, 'CKPT_TRAIN_SLOTS', 1) } : {}),
    stickySegments: env.CKPT_STICKY_SEGMENTS?.trim() !== '0',
    codecKeys: loadCodecKeys(env),
    uiAddress: (env.CKPT_UI_ADDRESS?.trim() || 'http://localhost:8233').replace(/\/+$/, ''),
  };
}

/**
 * The payload encryption keys of CKPT_CODEC_KEYS, else of the file CKPT_CODEC_KEY_FILE; undefined when
 * neither is set. An error names the entry, never a key's value.
 */
export function loadCodecKeys(env: NodeJS.ProcessEnv = process.env): CodecKeys | undefined {
  let field = 'CKPT_CODEC_KEYS';
  let text = env.CKPT_CODEC_KEYS?.trim();
  if (!text && env.CKPT_CODEC_KEY_FILE?.trim()) {
    field = 'CKPT_CODEC_KEY_FILE';
    try {
      text = readFileSync(env.CKPT_CODEC_KEY_FILE.trim(), 'utf8');
    } catch (err) {
      throw new InvalidArgumentError(
        `${field}: cannot read ${env.CKPT_CODEC_KEY_FILE}: ${(err as Error).message}`,
        {
          field,
        },
      );
    }
  }
  if (!text) return undefined;
  const entries = text
    .split(/[,\n]/)
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean);
  const keys: Record<string, Buffer> = {};
  for (const [i, entry] of entries.entries()) {
    const colon = entry.indexOf(':');
    const id = entry.slice(0, colon).trim();
    const key = Buffer.from(entry.slice(colon + 1).trim(), 'base64');
    if (colon <= 0 || !/^[\w.-]+$/.test(id) || key.length !== 32) {
      throw new InvalidArgumentError(
        `${field}: entry ${i + 1}${colon > 0 ? ` (key id "${id}")` : ''} must be ID:KEY with a 32-byte key in base64 (openssl rand -base64 32)`,
        { field },
      );
    }
    if (keys[id]) throw new InvalidArgumentError(`${field}: key id "${id}" is listed twice`, { field });
    keys[id] = key;
  }
  if (entries.length === 0) return undefined;
  return { active: Object.keys(keys)[0]!, keys };
}

export interface S3Config {
  endpoint?: string;
  region: string;
  /** Unset: path-style with a custom endpoint, the SDK's choice otherwise. */
  forcePathStyle?: boolean;
  sse?: S3Sse;
  /** Limit of one attempt of one S3 call (S3StoreOptions.requestTimeoutMs). */
  requestTimeoutMs: number;
}

const DEFAULT_STORE_ROOT = './checkpoints';

/** What a worker's activities may touch, whoever started the workflow (activities/allowed-roots.ts). */
export interface AllowedRoots {
  /** Checkpoint locations (local folders made absolute, or URLs). */
  checkpoints: string[];
  /** Folders (absolute) whose modules a pipeline may name as its program by path. */
  programs: string[];
}

function locationList(text: string, field: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((entry) => absoluteLocation(entry, field));
}

export function loadAllowedRoots(env: NodeJS.ProcessEnv = process.env): AllowedRoots {
  const checkpoints = env.CKPT_ALLOWED_ROOTS?.trim()
    ? locationList(env.CKPT_ALLOWED_ROOTS, 'CKPT_ALLOWED_ROOTS')
    : [absoluteLocation(env.CKPT_ROOT?.trim() || DEFAULT_STORE_ROOT, 'CKPT_ROOT')];
  const programs = locationList(env.CKPT_ALLOWED_PROGRAM_ROOTS ?? '', 'CKPT_ALLOWED_PROGRAM_ROOTS');
  const url = programs.find((p) => /^[a-z][a-z0-9+.-]*:\/\//i.test(p));
  if (url) {
    throw new InvalidArgumentError(`CKPT_ALLOWED_PROGRAM_ROOTS: "${url}" is not a local folder`, {
      field: 'CKPT_ALLOWED_PROGRAM_ROOTS',
    });
  }
  return { checkpoints, programs };
}

export const DEFAULT_SOURCES: Readonly<Record<string, string>> = {
  base: 'base_checkpoints',
  sft: 'chatsft_checkpoints',
  rl: 'chatrl_checkpoints',
};

export function parseSources(
  spec: string,
  base: Record<string, string> = { ...DEFAULT_SOURCES },
): Record<string, string> {
  const out = { ...base };
  for (const part of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) {
      throw new InvalidArgumentError(`CKPT_SOURCES: "${part}" must look like name=directory`, {
        field: 'CKPT_SOURCES',
      });
    }
    out[validateName(part.slice(0, eq), 'source')] = validateName(part.slice(eq + 1), 'source directory');
  }
  return out;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "30m", "1h", "2d", "500ms" or a bare number of seconds. */
export function parseDuration(text: string, field: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) {
    throw new InvalidArgumentError(`${field}: "${text}" is not a duration (e.g. 90s, 30m, 1h, 2d)`, {
      field,
    });
  }
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!);
}

const BACKENDS: BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

export function loadConfig(env: NodeJS.ProcessEnv = process.env): CkptConfig {
  const backend = env.CKPT_BACKEND?.trim();
  if (backend && !BACKENDS.includes(backend as BackendName)) {
    throw new InvalidArgumentError(`CKPT_BACKEND must be one of ${BACKENDS.join(', ')}, got "${backend}"`, {
      field: 'CKPT_BACKEND',
    });
  }
  return {
    storeRoot: checkLocation(env.CKPT_ROOT?.trim() || DEFAULT_STORE_ROOT, 'CKPT_ROOT'),
    sources: env.CKPT_SOURCES ? parseSources(env.CKPT_SOURCES) : { ...DEFAULT_SOURCES },
    backend: (backend as BackendName) || undefined,
    logLevel: env.CKPT_LOG_LEVEL?.trim() || 'info',
    logAllRanks: env.CKPT_LOG_ALL_RANKS === '1' || env.CKPT_LOG_ALL_RANKS === 'true',
    logFormat: env.CKPT_LOG_FORMAT === 'json' ? 'json' : 'text',
    logFormatExplicit: !!env.CKPT_LOG_FORMAT?.trim(),
    metricsPort: port(env, 'CKPT_METRICS_PORT'),
    sdkMetricsPort: port(env, 'CKPT_SDK_METRICS_PORT'),
    metricsHost: env.CKPT_METRICS_HOST?.trim() || undefined,
    codecAuth: env.CKPT_CODEC_AUTH?.trim() || undefined,
    gcGraceMs: env.CKPT_GC_GRACE ? parseDuration(env.CKPT_GC_GRACE, 'CKPT_GC_GRACE') : 3_600_000,
    retention: { keepLast: 3 },
    s3: loadS3Config(env),
    temporal: loadTemporalSettings(env),
  };
}

function firstSet(env: NodeJS.ProcessEnv, ...names: string[]): string | undefined {
  for (const name of names) {
    const v = env[name]?.trim();
    if (v) return v;
  }
  return undefined;
}

export function loadS3Config(env: NodeJS.ProcessEnv = process.env): S3Config {
  const config: S3Config = {
    region: firstSet(env, 'CKPT_S3_REGION', 'AWS_REGION', 'AWS_DEFAULT_REGION') ?? 'us-east-1',
    requestTimeoutMs: parseDuration(env.CKPT_S3_REQUEST_TIMEOUT?.trim() || '30s', 'CKPT_S3_REQUEST_TIMEOUT'),
  };
  if (config.requestTimeoutMs < 1) {
    throw new InvalidArgumentError(
      `CKPT_S3_REQUEST_TIMEOUT must be at least 1ms, got "${env.CKPT_S3_REQUEST_TIMEOUT}"`,
      { field: 'CKPT_S3_REQUEST_TIMEOUT' },
    );
  }
  const endpoint = firstSet(env, 'CKPT_S3_ENDPOINT', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL');
  if (endpoint !== undefined) {
    if (!/^https?:\/\/[^/]/i.test(endpoint)) {
      throw new InvalidArgumentError(`CKPT_S3_ENDPOINT: "${endpoint}" must be an http(s) URL`, {
        field: 'CKPT_S3_ENDPOINT',
      });
    }
    config.endpoint = endpoint;
  }
  const pathStyle = env.CKPT_S3_FORCE_PATH_STYLE?.trim().toLowerCase();
  if (pathStyle) {
    if (!['1', '0', 'true', 'false'].includes(pathStyle)) {
      throw new InvalidArgumentError(`CKPT_S3_FORCE_PATH_STYLE must be 1 or 0, got "${pathStyle}"`, {
        field: 'CKPT_S3_FORCE_PATH_STYLE',
      });
    }
    config.forcePathStyle = pathStyle === '1' || pathStyle === 'true';
  }
  const kmsKeyId = env.CKPT_S3_SSE_KMS_KEY_ID?.trim() || undefined;
  const sse = env.CKPT_S3_SSE?.trim() || (kmsKeyId ? 'aws:kms' : undefined);
  if (sse !== undefined) {
    if (!SSE_MODES.includes(sse as ServerSideEncryption)) {
      throw new InvalidArgumentError(`CKPT_S3_SSE must be one of ${SSE_MODES.join(', ')}, got "${sse}"`, {
        field: 'CKPT_S3_SSE',
      });
    }
    if (kmsKeyId && sse === 'AES256') {
      throw new InvalidArgumentError('CKPT_S3_SSE_KMS_KEY_ID needs CKPT_S3_SSE=aws:kms or aws:kms:dsse', {
        field: 'CKPT_S3_SSE_KMS_KEY_ID',
      });
    }
    config.sse = { serverSideEncryption: sse as ServerSideEncryption, ...(kmsKeyId ? { kmsKeyId } : {}) };
  }
  return config;
}

/** Directory of a source under a root, e.g. ("./ckpt", "base") → "./ckpt/base_checkpoints". */
export function sourceDir(config: Pick<CkptConfig, 'sources'>, source: string): string {
  validateName(source, 'source');
  const dir = config.sources[source];
  if (!dir) {
    throw new InvalidArgumentError(
      `unknown source "${source}"; known sources: ${Object.keys(config.sources).join(', ')} (add one with CKPT_SOURCES=name=dir)`,
      { field: 'source' },
    );
  }
  return dir;
}
