/**
 * Typed failures of the process group. They extend CheckpointError so the CLI's exit-code mapping works
 * for them too: 1 when the job failed at run time (a peer died, a collective timed out), 2 when the job was
 * configured wrongly (world sizes disagree, two processes claim one rank, a collective called wrongly).
 */
import { CheckpointError, type ErrorContext } from '../../checkpoint/errors';

/**
 * Base of every process-group error, so callers can catch "the distributed job failed" in one place. A peer
 * that died or went silent is why most of them happen, so they are retryable; the configuration mistakes
 * (exit 2) are not.
 */
export class DistributedError extends CheckpointError {
  override readonly exitCode: 1 | 2 = 1;
  static override readonly retryable: boolean = true;
}

export type RendezvousFault =
  | 'timeout'
  | 'world-size-mismatch'
  | 'duplicate-rank'
  | 'rank-out-of-range'
  | 'address-in-use'
  | 'rejected'
  | 'aborted'
  | 'master-lost'
  | 'invalid-options';

const CONFIG_FAULTS: ReadonlySet<RendezvousFault> = new Set([
  'world-size-mismatch',
  'duplicate-rank',
  'rank-out-of-range',
  'invalid-options',
]);

/** The ranks could not meet. `reason` says why; configuration mistakes exit with 2. */
export class RendezvousError extends DistributedError {
  override readonly exitCode: 1 | 2;
  constructor(
    readonly reason: RendezvousFault,
    message: string,
    context: ErrorContext = {},
  ) {
    super(message, context);
    this.exitCode = CONFIG_FAULTS.has(reason) ? 2 : 1;
  }

  /** A timeout or a lost master may pass; a configuration mistake is made again by every retry. */
  override get retryable(): boolean {
    return !CONFIG_FAULTS.has(this.reason);
  }
}

/** The connection to `peer` closed in the middle of the job (process killed, exited, or closed its group). */
export class PeerLostError extends DistributedError {
  constructor(
    readonly peer: number,
    message: string,
    /** The rank that noticed the loss, when it is not this one (it told us through an abort). */
    readonly reportedBy?: number,
    context: ErrorContext = {},
  ) {
    super(message, context);
  }
}

/** A collective did not complete within its time limit: some rank went silent without closing its socket. */
export class CollectiveTimeoutError extends DistributedError {
  constructor(
    readonly op: string,
    readonly timeoutMs: number,
    /** Ranks this rank was still waiting for when the time ran out (may be empty: waiting to send). */
    readonly waitingFor: number[],
    message: string,
    readonly reportedBy?: number,
  ) {
    super(message);
  }
}

/** Another rank failed for a reason of its own and aborted the group. */
export class CollectiveAbortedError extends DistributedError {
  constructor(
    readonly fromRank: number,
    message: string,
  ) {
    super(message);
  }
}

/** The ranks did not call the same collective with the same shapes (a bug in the calling program). */
export class CollectiveMismatchError extends DistributedError {
  override readonly exitCode = 2 as const;
  static override readonly retryable = false;
}

/** The group failed earlier; `cause` is that first failure. Every call after it rejects at once. */
export class ProcessGroupBrokenError extends DistributedError {}

/** The group was closed by this process. */
export class ProcessGroupClosedError extends DistributedError {
  override readonly exitCode = 2 as const;
  static override readonly retryable = false;
}

/** What an abort frame carries, so the receiving rank can rebuild the typed error of the rank that failed. */
export interface AbortReport {
  /** The rank where the failure happened; relayed reports keep it, so the message names the source. */
  origin?: number;
  name: string;
  message: string;
  peer?: number;
  op?: string;
  timeoutMs?: number;
  waitingFor?: number[];
}

export function abortReport(err: Error, origin: number): AbortReport {
  const report: AbortReport = { origin, name: err.name, message: err.message };
  if (err instanceof PeerLostError) report.peer = err.peer;
  if (err instanceof CollectiveTimeoutError) {
    report.op = err.op;
    report.timeoutMs = err.timeoutMs;
    report.waitingFor = err.waitingFor;
  }
  return report;
}

/**
 * Rebuild the typed error another rank reported. A lost peer stays a PeerLostError naming the lost rank (not
 * the messenger), a timeout stays a CollectiveTimeoutError, anything else becomes CollectiveAbortedError.
 */
export function fromAbortReport(messenger: number, report: AbortReport): DistributedError {
  const from = typeof report.origin === 'number' ? report.origin : messenger;
  const tail = ` (reported by rank ${from})`;
  if (report.name === 'PeerLostError' && typeof report.peer === 'number') {
    return new PeerLostError(report.peer, report.message + tail, from);
  }
  if (report.name === 'CollectiveTimeoutError') {
    return new CollectiveTimeoutError(
      report.op ?? 'collective',
      report.timeoutMs ?? 0,
      report.waitingFor ?? [],
      report.message + tail,
      from,
    );
  }
  return new CollectiveAbortedError(from, `rank ${from} aborted the process group: ${report.message}`);
}
