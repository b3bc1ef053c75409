/**
 * One error hierarchy for the whole checkpoint layer. Every error says which file, step and field was wrong,
 * and carries `exitCode`: 1 when a check failed (corruption, checksum), 2 when the input was bad or
 * incompatible (usage, names, schema, world size). The CLI maps errors to exit codes through it.
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

  constructor(message: string, context: ErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = new.target.name;
    this.file = context.file;
    this.step = context.step;
    this.field = context.field;
    this.tensor = context.tensor;
  }
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

/** A rank's file that the manifest or the world size requires is missing. */
export class MissingFileError extends CheckpointError {
  override readonly exitCode = 1 as const;
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
 * a 5xx from the server, throttling. Exit code 1, so activities retry it (a StoreError for bad input,
 * a missing bucket or denied access stays exit 2: retrying cannot help).
 */
export class TransientStoreError extends StoreError {
  override readonly exitCode = 1 as const;
}

/** Ranks did not all arrive at a commit within the time allowed. */
export class CommitTimeoutError extends CheckpointError {
  override readonly exitCode = 1 as const;
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
