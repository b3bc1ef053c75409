/**
 * Multi-rank segments: W rank activities run in parallel on training workers and meet through this
 * workflow's rendezvous. Each attempt has a generation; the rendezvous answers only ranks of the current
 * generation, once all W have joined. If any rank fails, the attempt is cancelled on every rank and retried
 * as a group from the last checkpoint, backing off as activity retries do; a failure that retrying cannot
 * fix (non-retryable, as for a single-rank segment) ends the segment at once. If the group cannot assemble
 * within `shrinkAfterMs` (fewer workers than ranks) and the minimum world size allows, the next attempt
 * runs with one rank fewer; the trainer re-partitions the optimizer state (resharding).
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  defineUpdate,
  patched,
  proxyActivities,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { TrainActivities } from '../activities';
import type { JoinRequest, Rendezvous, SegmentResult, TrainFlags, TrainingSpec } from '../activities/types';
import { activityOptions, retryDelayMs, type WorkflowSettings } from './options';

/**
 * Groups started before this version retried a non-retryable failure like any other: their histories have
 * the backoff timer and the next attempt, so the new early end applies only where patched() says so.
 */
export const GROUP_NON_RETRYABLE_PATCH = 'group-non-retryable-v1';

/**
 * Groups started before this version began the next attempt (or let the pipeline read the last checkpoint
 * after a stop) as soon as one rank had ended: their histories have the next commands earlier.
 */
export const GROUP_WAIT_FOR_RANKS_PATCH = 'group-wait-for-ranks-v1';

/**
 * Groups started before this version waited out shrinkAfterMs after a rank failed before the group
 * assembled: their histories have that timer fire, then the retry (or a shrink, above the minimum size).
 */
export const GROUP_RETRY_BEFORE_ASSEMBLY_PATCH = 'group-retry-before-assembly-v1';

/** Whether a rank's failure is one the activity retry policy would not retry (flag or type). */
function nonRetryable(err: unknown, settings: WorkflowSettings): boolean {
  const cause = err instanceof ActivityFailure ? err.cause : undefined;
  return (
    cause instanceof ApplicationFailure &&
    (cause.nonRetryable || settings.nonRetryableErrorTypes.includes(cause.type ?? ''))
  );
}

export const joinRendezvousUpdate = defineUpdate<Rendezvous, [JoinRequest]>('joinRendezvous');

export interface GroupState {
  worldSize: number;
  minWorldSize: number;
  generation: number;
  /** Changes of world size, for the status: at which step, from what to what, and why. */
  changes: Array<{ step: number; from: number; to: number; reason: string }>;
}

export interface GroupSegment {
  dir: string;
  fromStep: number;
  toStep: number;
  saveEvery: number;
  training?: TrainingSpec;
  flags?: TrainFlags;
  settings: WorkflowSettings;
  shrinkAfterMs: number;
}

export class RankGroup {
  private joined = new Map<number, string | null>();
  private readonly ranks: TrainActivities;

  constructor(
    readonly state: GroupState,
    settings: WorkflowSettings,
  ) {
    // The group is the unit of retry: a rank attempt is never retried alone.
    const options = activityOptions(settings, 'train');
    this.ranks = proxyActivities<TrainActivities>({
      ...options,
      retry: { ...options.retry, maximumAttempts: 1 },
    });
    setHandler(
      joinRendezvousUpdate,
      async (req) => {
        this.joined.set(req.rank, req.address);
        const generation = this.state.generation;
        await condition(
          () => this.joined.size === this.state.worldSize || this.state.generation !== generation,
        );
        if (this.state.generation !== generation) {
          throw ApplicationFailure.nonRetryable(
            `rendezvous generation ${generation} was abandoned`,
            'StaleRendezvous',
          );
        }
        return { generation, worldSize: this.state.worldSize, master: this.joined.get(0)! };
      },
      {
        validator: (req) => {
          if (req.generation !== this.state.generation) {
            throw new Error(
              `stale rendezvous: generation ${req.generation}, current ${this.state.generation}`,
            );
          }
          if (!Number.isInteger(req.rank) || req.rank < 0 || req.rank >= this.state.worldSize) {
            throw new Error(`rank ${req.rank} is outside world size ${this.state.worldSize}`);
          }
          if (req.rank === 0 && !req.address) throw new Error('rank 0 must give its address');
        },
        description:
          'A rank of the current generation joins the group; answers once every rank has joined (master address, world size).',
      },
    );
  }

  /** Train the segment with the whole group, retrying the group until it succeeds or attempts run out. */
  async run(segment: GroupSegment): Promise<SegmentResult> {
    const retry = segment.settings.activities;
    let failures = 0;
    for (;;) {
      this.state.generation += 1;
      this.joined = new Map();
      const worldSize = this.state.worldSize;
      // Decided as the attempt starts, before its first command, so an attempt that older code began
      // replays, and ends, as it began.
      const waitForRanks = patched(GROUP_WAIT_FOR_RANKS_PATCH);
      const retryBeforeAssembly = patched(GROUP_RETRY_BEFORE_ASSEMBLY_PATCH);
      const scope = new CancellationScope();
      let rankFailed = false;
      const ranks = Array.from({ length: worldSize }, (_, rank) => {
        const result = scope.run(() =>
          this.ranks.trainRank({
            dir: segment.dir,
            toStep: segment.toStep,
            saveEvery: segment.saveEvery,
            training: segment.training,
            flags: segment.flags,
            rank,
            worldSize,
            generation: this.state.generation,
            workflowId: workflowInfo().workflowId,
          }),
        );
        result.catch(() => (rankFailed = true));
        return result;
      });
      const attempt = Promise.all(ranks);
      attempt.catch(() => undefined);
      try {
        // A rank that failed before the group assembled needs no missing worker to explain it: retry now,
        // at the same world size.
        const assembled = await condition(
          () => this.joined.size === worldSize || (retryBeforeAssembly && rankFailed),
          segment.shrinkAfterMs,
        );
        if (!assembled && worldSize > this.state.minWorldSize) {
          scope.cancel();
          await (waitForRanks ? Promise.allSettled(ranks) : attempt.catch(() => undefined));
          this.state.changes.push({
            step: segment.fromStep,
            from: worldSize,
            to: worldSize - 1,
            reason: `only ${this.joined.size} of ${worldSize} ranks started within ${segment.shrinkAfterMs} ms`,
          });
          this.state.worldSize = worldSize - 1;
          continue;
        }
        const results = await attempt;
        return { ...results[0]!, attempt: failures + 1 };
      } catch (err) {
        scope.cancel();
        // Promise.all rejects at the first rank that ends; a rank still stopping could commit after the
        // next attempt started, or after a stop once the pipeline read the last checkpoint (a stop lands
        // here too: sleep() below rethrows its cancellation).
        if (waitForRanks) await Promise.allSettled(ranks);
        failures += 1;
        if (failures >= retry.maximumAttempts) throw err;
        if (nonRetryable(err, segment.settings) && patched(GROUP_NON_RETRYABLE_PATCH)) throw err;
        await sleep(retryDelayMs(retry, failures));
      }
    }
  }
}
