/**
 * One error hierarchy for the whole checkpoint layer. Every error says which file, step and field was wrong,
 * and carries `exitCode`: 1 when a check failed (corruption, checksum), 2 when the input was bad or
 * incompatible (usage, names, schema, world size). The CLI maps errors to exit codes through it.
 *
 * Every class also says whether it is `retryable`: whether trying again, a moment later or on another
 * worker, can succeed. That is a separate fact from the exit code (a schema error is a failed check, exit 1,
 * yet a retry reads the same bytes; a backend this worker lacks is bad input here, exit 2, yet another worker
 * may have it). The CLI's error report, the activities' Temporal failures and the pipelines'
 * nonRetryableErrorTypes all read it from the class, so they cannot disagree.
 */
export interface ErrorContext {
  file?: string;
  step?: number;
  field?: string;
  tensor?: string;
  cause?: unknown;
}

export class CheckpointError extends Error {
  readonly file?: string;
  readonly step?: number;
  readonly field?: string;
  readonly tensor?: string;
  /** 1: a check failed; 2: bad input or usage. */
  readonly exitCode: 1 | 2 = 2;
  /**
   * The class's decision (see the file's header). Bad input, an incompatible, corrupt or already committed
   * checkpoint stay what they are on a retry, so the base says no; causes that can pass override it.
   */
  static readonly retryable: boolean = false;

  constructor(message: string, context: ErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = new.target.name;
    this.file = context.file;
    this.step = context.step;
    this.field = context.field;
    this.tensor = context.tensor;
  }

  /** Its class's `retryable`; a class whose instances differ by cause (RendezvousError) overrides this. */
  get retryable(): boolean {
    return (this.constructor as typeof CheckpointError).retryable;
  }
}

/** An error class of the hierarchy, as tables derived from the classes see it (NON_RETRYABLE_ERRORS). */
export interface ErrorClass {
  readonly name: string;
  readonly retryable: boolean;
  readonly prototype: CheckpointError;
}

/** The CheckpointError classes among the exports of `modules` (each once), for tables derived from them. */
export function errorClasses(...modules: object[]): ErrorClass[] {
  const found = new Set<ErrorClass>();
  for (const exports of modules) {
    for (const value of Object.values(exports)) {
      if (
        typeof value === 'function' &&
        (value === CheckpointError || value.prototype instanceof CheckpointError)
      )
        found.add(value as ErrorClass);
    }
  }
  return [...found];
}

/**
 * Whether retrying can help after `err`. An error outside the hierarchy (a bug, a Node error nothing
 * wrapped) says nothing about the input and may be this worker's own: retry, as Temporal does by default.
 */
export function isRetryable(err: unknown): boolean {
  return err instanceof CheckpointError ? err.retryable : true;
}

/** A name, step or path given by a user that is not allowed (traversal, separators, negative step...). */
export class InvalidArgumentError extends CheckpointError {}

/** A safetensors file whose header or layout breaks the format. `reason` says which rule. */
export type SafetensorsFault =
  | 'truncated'
  | 'header-too-large'
  | 'header-past-end'
  | 'invalid-json'
  | 'invalid-header'
  | 'duplicate-key'
  | 'unknown-dtype'
  | 'invalid-shape'
  | 'shape-mismatch'
  | 'offsets-overlap'
  | 'offsets-gap'
  | 'length-mismatch'
  | 'invalid-metadata'
  | 'invalid-tensor';

export class SafetensorsError extends CheckpointError {
  override readonly exitCode = 1 as const;
  constructor(
    readonly reason: SafetensorsFault,
    message: string,
    context: ErrorContext = {},
  ) {
    super(message, context);
  }
}

/** Bytes on disk differ from what the manifest recorded (size or sha256). */
export class IntegrityError extends CheckpointError {
  override readonly exitCode = 1 as const;
  constructor(
    message: string,
    context: ErrorContext & { expected?: string | number; actual?: string | number } = {},
  ) {
    super(message, context);
    this.expected = context.expected;
    this.actual = context.actual;
  }
  readonly expected?: string | number;
  readonly actual?: string | number;
}

/** A manifest or meta JSON file that is not valid JSON or does not match its schema. */
export class SchemaError extends CheckpointError {
  override readonly exitCode = 1 as const;
}

/** The step has no manifest: it was never committed (or its save crashed). */
export class NotCommittedError extends CheckpointError {}

/** No checkpoint (or no tag) where one was expected. */
export class NoCheckpointError extends CheckpointError {
  override readonly exitCode = 1 as const;
}

/** A second writer tried to save a step that is already committed; nothing was changed. */
export class AlreadyCommittedError extends CheckpointError {}

/** The checkpoint was saved with another world size than the one asked for. */
export class WorldSizeMismatchError extends CheckpointError {
  constructor(
    readonly savedWorldSize: number,
    readonly requestedWorldSize: number,
    context: ErrorContext = {},
  ) {
    super(
      `${context.file ?? 'checkpoint'}: saved with world size ${savedWorldSize}, but loaded with world size ${requestedWorldSize}` +
        ' (use the same world size, or pass --reshard to re-partition the optimizer state)',
      context,
    );
  }
}

/**
 * A rank's file that the manifest or the world size requires is missing. Retryable: a pruner deletes a step's
 * manifest first, so a reader that got the manifest just before may find the files gone; a retry looks again.
 */
export class MissingFileError extends CheckpointError {
  override readonly exitCode = 1 as const;
  static override readonly retryable = true;
}

/** A lower-level storage failure (permissions, disk full, network). */
export class StoreError extends CheckpointError {
  readonly code?: string;
  constructor(message: string, context: ErrorContext & { code?: string } = {}) {
    super(message, context);
    this.code = context.code;
  }
}

/**
 * A store operation failed for a reason that may pass: the connection dropped or was refused, a timeout,
 * a 5xx from the server, throttling. Exit code 1 and retryable (a StoreError for bad input, a missing
 * bucket or denied access stays exit 2 and not retryable: retrying cannot help).
 */
export class TransientStoreError extends StoreError {
  override readonly exitCode = 1 as const;
  static override readonly retryable = true;
}

/**
 * The server refused the request (HTTP 403): wrong credentials, or a bucket policy that does not allow it.
 * Exit 2 and not retryable, like other bad settings: the same request with the same credentials is
 * refused again.
 */
export class AccessDeniedError extends StoreError {}

/**
 * `ckpt commit` refused a program's files: a required file or rank file is missing, a file is malformed
 * (safetensors that do not parse, meta without its required keys), or a name is outside the contract.
 * Nothing was published. Exit 2; not retried: the same files are refused again.
 */
export class CommitRefusedError extends CheckpointError {}

/** Ranks did not all arrive at a commit within the time allowed. */
export class CommitTimeoutError extends CheckpointError {
  override readonly exitCode = 1 as const;
  static override readonly retryable = true;
}

/**
 * Another writer holds the directory: a live writer lease (writer_<epoch>.json) of another run, or a file of
 * an uncommitted step that another writer published with other bytes while this one has no right to remove
 * it. Nothing was written or changed. Exit 2; not retried: the same start meets the same writer.
 */
export class WriterConflictError extends CheckpointError {}

/**
 * A newer writer took the directory over (a higher lease epoch): this writer stops without committing.
 * Exit 2; not retried: the attempt that fenced it is the one that goes on.
 */
export class WriterFencedError extends CheckpointError {}

/**
 * This writer's lease ran out (its renewals failed, e.g. cut off from the Temporal server or the store):
 * it stops without committing. Exit 1; retryable: a new attempt takes a new lease.
 */
export class WriterLeaseExpiredError extends CheckpointError {
  override readonly exitCode = 1 as const;
  static override readonly retryable = true;
}

/**
 * A file of an uncommitted step exists with other bytes than this writer's, and this writer holds no lease
 * that lets it remove it (a rank other than 0). Exit 1; retryable: the next attempt's rank 0 clears the
 * step's files under its lease before training.
 */
export class FileConflictError extends CheckpointError {
  override readonly exitCode = 1 as const;
  static override readonly retryable = true;
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/**
 * An error as plain data, to cross a thread boundary (the async save thread, checkpoint/async-save.ts):
 * structured cloning keeps only an Error's message and stack, and the class, exit code and context fields
 * (file, step, field, code...) are what callers act on.
 */
export interface ErrorRecord {
  name: string;
  message: string;
  stack?: string;
  /** Whether the error was a CheckpointError (then `retryable` and `exitCode` were read from it). */
  checkpoint: boolean;
  retryable?: boolean;
  /** Own fields with plain values: exitCode, file, step, field, tensor, code, reason... */
  fields: Record<string, string | number | boolean>;
}

export function errorRecord(err: unknown): ErrorRecord {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err), checkpoint: false, fields: {} };
  const fields: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(err)) {
    if (['string', 'number', 'boolean'].includes(typeof value))
      fields[key] = value as string | number | boolean;
  }
  const checkpoint = err instanceof CheckpointError;
  return {
    name: err.name,
    message: err.message,
    stack: err.stack,
    checkpoint,
    ...(checkpoint ? { retryable: err.retryable } : {}),
    fields,
  };
}

/**
 * The error a record describes, as an instance of its class when `classes` has one of that name (so
 * `instanceof`, `exitCode` and `retryable` work as if it had been thrown here), else of CheckpointError
 * or Error with the same name, exit code and retry decision. Its stack is the original thread's.
 */
export function errorFromRecord(record: ErrorRecord, classes: readonly ErrorClass[] = []): Error {
  const type = classes.find((c) => c.name === record.name) ?? (record.checkpoint ? CheckpointError : Error);
  // Built without running the class's constructor: constructors take different arguments, and every
  // field they would set is in the record.
  const err = Reflect.construct(Error, [record.message], type as unknown as new () => Error) as Error;
  Object.assign(err, record.fields, { name: record.name });
  if (record.stack !== undefined) err.stack = record.stack;
  if (record.retryable !== undefined && err instanceof CheckpointError && err.retryable !== record.retryable)
    Object.defineProperty(err, 'retryable', { value: record.retryable });
  return err;
}
