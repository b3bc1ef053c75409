/**
 * Errors → Temporal failures, for every activity. The failure's type is the error's class name, and it is
 * non-retryable exactly when the class says retrying cannot help (`retryable` in checkpoint/errors.ts),
 * whether the error was thrown in this process (control activities) or reported by a `ckpt` child
 * (training, evaluation: activities/child.ts).
 */
import { ApplicationFailure, TemporalFailure } from '@temporalio/common';
import { isRetryable } from '../checkpoint/errors';
import type { ChildResult } from './child';

/** The failure to throw for `err`; a Temporal failure (a cancellation, say) is already one and passes. */
export function activityFailure(err: unknown): TemporalFailure {
  if (err instanceof TemporalFailure) return err;
  return ApplicationFailure.create({
    message: err instanceof Error ? err.message : String(err),
    type: err instanceof Error ? err.name : 'Error',
    nonRetryable: !isRetryable(err),
    // Keeps the original stack in the failure's chain (the Web UI shows it).
    cause: err instanceof Error ? err : undefined,
  });
}

/** The failure of a `ckpt` child that did not finish `what`. */
export function childFailure(what: string, result: ChildResult): ApplicationFailure {
  const how = result.signal ? `signal ${result.signal}` : `exit ${result.code}`;
  // A child killed by a signal, or gone without a report (a crash, an OOM kill, a segment that ended
  // without its `done` event), says nothing about its input: retry, as when a worker dies.
  const report = result.signal ? undefined : result.error;
  return ApplicationFailure.create({
    message: `${what} failed (${how}): ${report?.message ?? result.stderrTail}`,
    type: report?.errorType ?? 'ChildProcessError',
    nonRetryable: report ? !report.retryable : false,
  });
}
