/** Errors about training programs: bad input, so each exits 2 and is never retried. */
import { CheckpointError, InvalidArgumentError } from '../checkpoint/errors';

/** A checkpoint written by one program (or a newer version of it) is resumed or built by another. */
export class ProgramMismatchError extends InvalidArgumentError {}

/** A program refused its config (the message is the program's own). */
export class ProgramConfigError extends InvalidArgumentError {}

/** A program broke its own declaration (e.g. a session of the other kind than its `optimizer` says). */
export class ProgramContractError extends InvalidArgumentError {}

/** A program path or name that does not give a program (missing file, no default export, bad shape). */
export class ProgramLoadError extends InvalidArgumentError {}

/** A pipeline names a program this worker does not have. */
export class ProgramNotRegisteredError extends InvalidArgumentError {}

/** A command program exited 2: a failure it says retrying cannot fix (bad config, bad data). Not retried. */
export class CommandFailedError extends CheckpointError {}

/**
 * A command program exited with another code, was killed by a signal, or could not be started: retried
 * from the last committed step (a node that died, an out-of-memory kill, a crash).
 */
export class CommandCrashedError extends CheckpointError {
  override readonly exitCode = 1 as const;
  static override readonly retryable = true;
}
