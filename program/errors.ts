/** Errors about training programs: bad input, so each exits 2 and is never retried. */
import { InvalidArgumentError } from '../checkpoint/errors';

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
