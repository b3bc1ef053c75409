/**
 * Logging. Every rank runs the same code, so by default only rank 0 speaks (nanochat's `log0`); the debug
 * mode lets every rank speak, tagged with its rank. Logs go to stderr: stdout is for command results.
 */
import pino, { type Logger } from 'pino';

export interface LogOptions {
  level?: string;
  /** Log from every rank, each line tagged with its rank (debugging multi-rank runs). */
  allRanks?: boolean;
  /** Where lines go, in either format; stderr (fd 2) by default. */
  destination?: pino.DestinationStream;
  /** 'json' (pino's lines, for machines) or 'text' (one short line per message, for people). */
  format?: 'json' | 'text';
  /** Text format: append the record's fields as `key=value` (workers: task queue, workflow, activity...). */
  textFields?: boolean;
}

const LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: '',
  40: 'warning',
  50: 'error',
  60: 'fatal',
};

/** Fields a person reading text lines does not need (the JSON format keeps them). */
const QUIET_FIELDS = new Set([
  'level',
  'time',
  'msg',
  'rank',
  'taskToken',
  'isLocal',
  'namespace',
  'workflowRunId',
  'activityId',
]);

/** ` key=value` for the fields of a record; an error shows as its message. */
function fieldsText(rec: Record<string, unknown>): string {
  let text = '';
  for (const [key, raw] of Object.entries(rec)) {
    if (QUIET_FIELDS.has(key) || raw === undefined) continue;
    const value =
      raw !== null && typeof raw === 'object' && typeof (raw as { message?: unknown }).message === 'string'
        ? (raw as { message: string }).message
        : raw;
    const plain = typeof value === 'string' && /^[^\s"=]+$/.test(value);
    text += ` ${key}=${plain ? value : JSON.stringify(value)}`;
  }
  return text;
}

/** Turns pino's JSON lines into short lines for people: "ckpt: [warning: ]message [rank N][ key=value...]". */
function textDestination(out: pino.DestinationStream, withFields = false): pino.DestinationStream {
  return {
    write(line: string) {
      try {
        const rec = JSON.parse(line) as { level: number; msg: string; rank?: number };
        const level = LEVELS[rec.level] ?? '';
        const fields = withFields ? fieldsText(rec as unknown as Record<string, unknown>) : '';
        // One line per record: a message of several lines (a bundler report) is joined with " | ".
        const msg = withFields ? String(rec.msg).replace(/\s*\n\s*/g, ' | ') : rec.msg;
        out.write(
          `ckpt: ${level ? level + ': ' : ''}${msg}${rec.rank !== undefined ? ` [rank ${rec.rank}]` : ''}${fields}\n`,
        );
      } catch {
        out.write(line);
      }
    },
  };
}

/**
 * Fields whose values are credentials, wherever they sit in a record (top level or one object down):
 * S3 credentials, Temporal API keys and authorization headers, payload codec keys, passwords.
 * A whole `env` is never logged either: it holds all of them.
 */
const SECRET_FIELDS = [
  'secretAccessKey',
  'accessKeyId',
  'sessionToken',
  'apiKey',
  'password',
  'credentials',
  'authorization',
  'codecKey',
  'codecKeys',
  'env',
];
const REDACT = [
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((f) => `*.${f}`),
  'headers.authorization',
  '*.headers.authorization',
  '*.metadata.authorization',
];

/**
 * The signing parts of presigned URLs (S3's query-string authentication, v4 and v2), wherever a URL is
 * written in a message or a field: the URL stays readable, the part that grants access does not.
 */
const SIGNED_URL_PARAMS =
  /([?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=)[^&\s"']*/gi;

export function redactText(text: string): string {
  return text.replace(SIGNED_URL_PARAMS, '$1[redacted]');
}

function redactStrings(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value);
  // Plain records only: an Error (or any class instance) passes whole, for pino's own serialisation.
  if (depth > 2 || typeof value !== 'object' || value === null) return value;
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  return Object.fromEntries(
    Object.entries(value as object).map(([k, v]) => [k, redactStrings(v, depth + 1)]),
  );
}

/** What every logger of the process is made with: redacted fields, and signed URLs cut in every string. */
const REDACTING: pino.LoggerOptions = {
  base: undefined,
  redact: { paths: REDACT, censor: '[redacted]' },
  hooks: {
    logMethod(args, method) {
      method.apply(this, args.map((a) => redactStrings(a)) as Parameters<typeof method>);
    },
  },
};

let allRanks = false;
let logger: Logger = makeLogger({});

function makeLogger(options: LogOptions): Logger {
  return pino(
    { ...REDACTING, level: options.level ?? 'info' },
    options.format === 'text'
      ? textDestination(options.destination ?? process.stderr, options.textFields)
      : (options.destination ?? pino.destination({ fd: 2, sync: true })),
  );
}

export function configureLogging(options: LogOptions): void {
  allRanks = options.allRanks ?? allRanks;
  logger = makeLogger(options);
}

export function getLogger(): Logger {
  return logger;
}

/** The rank of this process: from the call, else the launcher's RANK variable, else 0. */
export function currentRank(rank?: number): number {
  if (rank !== undefined) return rank;
  const env = Number(process.env.RANK ?? 0);
  return Number.isInteger(env) && env >= 0 ? env : 0;
}

type Level = 'info' | 'warn' | 'error' | 'debug';

/** Log only on rank 0 (or on every rank, tagged, in debug mode). */
export function log0(
  message: string,
  fields: Record<string, unknown> = {},
  level: Level = 'info',
  rank?: number,
): void {
  const r = currentRank(rank);
  if (r !== 0 && !allRanks) return;
  logger[level](allRanks ? { rank: r, ...fields } : fields, message);
}

export function warn0(message: string, fields: Record<string, unknown> = {}, rank?: number): void {
  log0(message, fields, 'warn', rank);
}

const onceKeys = new Set<string>();
/** Log a message once per process (e.g. a migration patch applied to every checkpoint loaded). */
export function logOnce(
  key: string,
  message: string,
  fields: Record<string, unknown> = {},
  rank?: number,
): void {
  if (onceKeys.has(key)) return;
  onceKeys.add(key);
  log0(message, fields, 'info', rank);
}

/** A log record as pino writes it: level number, message, fields. */
export type LogRecord = Record<string, unknown> & { level: number; msg: string; rank?: number };

/**
 * Hand this thread's records to `send` instead of writing them (a worker thread: the async save thread),
 * so that the thread that owns the logger writes them with its level, format and rank rule
 * (logForwarded). Every record is handed on, each tagged with its rank.
 */
export function forwardLogging(send: (record: LogRecord) => void): void {
  allRanks = true;
  logger = pino(
    { ...REDACTING, level: 'debug' },
    { write: (line: string) => send(JSON.parse(line) as LogRecord) },
  );
}

/** Write a record forwarded from another thread (forwardLogging) as if it had been logged here. */
export function logForwarded(record: LogRecord): void {
  const { level, msg, rank, time: _time, ...fields } = record;
  const name: Level = level >= 50 ? 'error' : level >= 40 ? 'warn' : level >= 30 ? 'info' : 'debug';
  log0(String(msg), fields, name, rank);
}
