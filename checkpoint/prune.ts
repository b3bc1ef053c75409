/**
 * Applying a retention policy to a checkpoint directory: gather the candidates (manifests, eval metrics,
 * leases, which newest step verifies), plan with the pure planner, then delete by the commit protocol.
 */
import { committedSteps, listCheckpoints } from './discovery';
import { activeLeases } from './lease';
import { log0 } from './log';
import { type Location, openStore } from './location';
import { deleteCheckpoint } from './maintenance';
import { planRetention, type RetentionCandidate, type RetentionPlan, type RetentionPolicy, validatePolicy } from './retention';
import { verifyCheckpoint } from './verify';

export interface PruneOptions {
  dryRun?: boolean;
  now?: number;
}

export interface PruneResult extends RetentionPlan {
  dryRun: boolean;
  deleted: number[];
}

export async function pruneCheckpoints(dir: Location, policy: RetentionPolicy, options: PruneOptions = {}): Promise<PruneResult> {
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
