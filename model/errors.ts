/**
 * Typed errors of the model layer. They extend the checkpoint layer's hierarchy so the CLI maps them to exit
 * codes the same way (2: bad input or incompatible files).
 */
import { CheckpointError, InvalidArgumentError, type ErrorContext } from '../checkpoint/errors';

/** A model config value that breaks a constraint (type, range, divisibility); `field` names the config key. */
export class ConfigError extends InvalidArgumentError {}

/**
 * A requested compute backend could not be loaded (not installed, or failed to initialise). Exit 2 (this
 * machine cannot run the command as asked), but retryable: another worker may have the backend.
 */
export class BackendUnavailableError extends CheckpointError {
  static override readonly retryable = true;
  constructor(
    readonly backend: string,
    message: string,
    context: ErrorContext = {},
  ) {
    super(message, context);
  }
}

export interface ShapeMismatch {
  name: string;
  expected: readonly number[] | string;
  actual: readonly number[] | string;
}

/**
 * A set of named tensors (model parameters or optimizer state) that does not match what was expected.
 * Every problem is listed at once so one failed load shows everything that is wrong.
 */
export class TensorSetMismatchError extends CheckpointError {
  constructor(
    readonly what: string,
    readonly missing: string[],
    readonly unexpected: string[],
    readonly mismatched: ShapeMismatch[],
    context: ErrorContext = {},
  ) {
    const parts: string[] = [];
    if (missing.length > 0) parts.push(`missing: ${missing.join(', ')}`);
    if (unexpected.length > 0) parts.push(`unexpected: ${unexpected.join(', ')}`);
    if (mismatched.length > 0) {
      const fmt = (s: readonly number[] | string) => (typeof s === 'string' ? s : `[${s.join(',')}]`);
      parts.push(
        `mismatched: ${mismatched.map((m) => `${m.name} (expected ${fmt(m.expected)}, got ${fmt(m.actual)})`).join(', ')}`,
      );
    }
    super(`${what} do not match: ${parts.join('; ')}`, { field: context.field ?? what, ...context });
  }
}

/** The tokenizer recorded with a checkpoint differs from the one in use; `field` says which property. */
export class TokenizerMismatchError extends CheckpointError {}

/** Bad input to a model or optimizer call (wrong dtype, rank, unknown gradient name...). */
export class ModelInputError extends InvalidArgumentError {}
