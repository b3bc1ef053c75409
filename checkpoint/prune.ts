/**
 * Applying a retention policy to a checkpoint directory: gather the candidates (manifests, eval metrics,
 * leases, which newest step verifies), plan with the pure planner, then delete by the commit protocol.
 *
 * Every deletion is recorded first in the directory's append-only retention log (retention_log.jsonl, one
 * JSON line per pruned step: step, why, policy, time, plus the step's size, metrics and loss history), so
 * what retention removed stays visible after the files are gone.
 */
import { committedSteps, listCheckpoints } from './discovery';
import { CheckpointError, describeError } from './errors';
import { activeLeases } from './lease';
import { log0, warn0 } from './log';
import { type Location, openStore } from './location';
import { deleteCheckpoint } from './maintenance';
import { metaFile, RETENTION_LOG } from './names';
import type { Store } from './store';
import {
  planRetention,
  type RetentionCandidate,
  type RetentionPlan,
  type RetentionPolicy,
  validatePolicy,
} from './retention';
import { verifyCheckpoint } from './verify';

export interface PruneOptions {
  dryRun?: boolean;
  now?: number;
}

export interface PruneResult extends RetentionPlan {
  dryRun: boolean;
  deleted: number[];
}

export async function pruneCheckpoints(
  dir: Location,
  policy: RetentionPolicy,
  options: PruneOptions = {},
): Promise<PruneResult> {
  const store = openStore(dir);
  const valid = validatePolicy(policy);
  const infos = (await listCheckpoints(store)).filter((i) => i.committed);
  const leased = new Set((await activeLeases(store, options.now)).map((l) => l.step));
  const newestVerified = await findNewestVerified(store);
  const candidates: RetentionCandidate[] = infos.map((info) => ({
    step: info.step,
    committed: true,
    // Only the newest verified step matters to the planner; hashing every older checkpoint would make
    // pruning as slow as reading the whole history.
    verified: info.step === newestVerified,
    metrics: info.metrics,
    leased: leased.has(info.step),
  }));
  const plan = planRetention(candidates, valid);
  const deleted: number[] = [];
  if (!options.dryRun) {
    for (const { step, why } of plan.remove) {
      const info = infos.find((i) => i.step === step);
      await appendRetentionLog(store, {
        step,
        why,
        policy: valid,
        time: new Date(options.now ?? Date.now()).toISOString(),
        bytes: info?.bytes,
        metrics: info?.metrics,
        loss_history: await lossHistory(store, step),
      });
      await deleteCheckpoint(store, step);
      deleted.push(step);
      log0(`pruned step ${step}: ${why}`, { step });
    }
  }
  return { ...plan, dryRun: options.dryRun ?? false, deleted };
}

async function findNewestVerified(dir: Location): Promise<number | null> {
  const steps = await committedSteps(dir);
  for (let i = steps.length - 1; i >= 0; i--) {
    if ((await verifyCheckpoint(dir, steps[i]!)).ok) return steps[i]!;
  }
  return null;
}

/** One line of retention_log.jsonl: a step retention deleted, and why. */
export interface RetentionLogEntry {
  step: number;
  /** Why no rule kept it (the planner's explanation). */
  why: string;
  /** The validated policy that was applied. */
  policy: RetentionPolicy;
  /** ISO 8601: when the deletion was decided (logged right before the manifest was deleted). */
  time: string;
  /** Bytes of the step's files when it was deleted. */
  bytes?: number;
  /** Its eval metrics, if it had been evaluated. */
  metrics?: Record<string, number>;
  /** Its meta's loss_history ([step, loss] pairs), so loss curves survive pruning. */
  loss_history?: Array<[number, number]>;
}

/**
 * Appends one entry. The store has no append, so the log is read and republished whole (an atomic replace:
 * a reader sees the old or the new log, never a torn line). Two pruners running at once on one directory
 * could lose a line; pruning is meant to run one at a time per directory (the pipeline serialises it).
 */
export async function appendRetentionLog(dir: Location, entry: RetentionLogEntry): Promise<void> {
  const store = openStore(dir);
  let previous = '';
  if (await store.exists(RETENTION_LOG)) previous = (await store.read(RETENTION_LOG)).toString('utf8');
  if (previous !== '' && !previous.endsWith('\n')) previous += '\n';
  await store.put(RETENTION_LOG, Buffer.from(previous + JSON.stringify(entry) + '\n'));
}

/** The log's entries in order; lines that do not parse are skipped with a warning. Empty when there is no log. */
export async function readRetentionLog(dir: Location): Promise<RetentionLogEntry[]> {
  const store = openStore(dir);
  if (!(await store.exists(RETENTION_LOG))) return [];
  const entries: RetentionLogEntry[] = [];
  const lines = (await store.read(RETENTION_LOG)).toString('utf8').split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const entry = parseLogLine(line);
    if (typeof entry === 'string')
      warn0(`${RETENTION_LOG} line ${i + 1} skipped: ${entry}`, { file: RETENTION_LOG });
    else entries.push(entry);
  });
  return entries;
}

function parseLogLine(line: string): RetentionLogEntry | string {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (err) {
    return `invalid JSON (${describeError(err)})`;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not a JSON object';
  const o = v as Record<string, unknown>;
  if (typeof o.step !== 'number' || !Number.isSafeInteger(o.step) || o.step < 0)
    return 'step must be a non-negative integer';
  if (typeof o.why !== 'string') return 'why must be a string';
  if (typeof o.time !== 'string' || !Number.isFinite(Date.parse(o.time))) return 'time must be an ISO date';
  if (typeof o.policy !== 'object' || o.policy === null) return 'policy must be an object';
  return o as unknown as RetentionLogEntry;
}

/** The step's loss_history from its meta, or undefined when the meta is unreadable (pruning goes on). */
async function lossHistory(store: Store, step: number): Promise<Array<[number, number]> | undefined> {
  try {
    const meta = JSON.parse((await store.read(metaFile(step))).toString('utf8')) as {
      loss_history?: unknown;
    };
    const h = meta.loss_history;
    return Array.isArray(h) &&
      h.every((p) => Array.isArray(p) && p.length === 2 && p.every((x) => typeof x === 'number'))
      ? (h as Array<[number, number]>)
      : undefined;
  } catch (err) {
    if (!(err instanceof CheckpointError) && !(err instanceof SyntaxError)) throw err;
    return undefined;
  }
}
