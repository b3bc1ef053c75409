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

const REDACT = [
  'secretAccessKey',
  'accessKeyId',
  'sessionToken',
  'apiKey',
  'password',
  '*.secretAccessKey',
  '*.accessKeyId',
  '*.sessionToken',
  '*.apiKey',
  '*.password',
  'credentials',
  '*.credentials',
];

let allRanks = false;
let logger: Logger = makeLogger({});

function makeLogger(options: LogOptions): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: undefined,
      redact: { paths: REDACT, censor: '[redacted]' },
    },
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
    { level: 'debug', base: undefined, redact: { paths: REDACT, censor: '[redacted]' } },
    { write: (line: string) => send(JSON.parse(line) as LogRecord) },
  );
}

/** Write a record forwarded from another thread (forwardLogging) as if it had been logged here. */
export function logForwarded(record: LogRecord): void {
  const { level, msg, rank, time: _time, ...fields } = record;
  const name: Level = level >= 50 ? 'error' : level >= 40 ? 'warn' : level >= 30 ? 'info' : 'debug';
  log0(String(msg), fields, name, rank);
}
