/**
 * Removing checkpoints without ever exposing a half one: delete takes the manifest first (the step stops
 * existing at once), then the data files. Garbage collection removes what a crashed save left behind:
 * files of steps that never committed, temp files and expired leases, once older than a grace period
 * (a save in progress right now looks exactly like an orphan, so young files are left alone).
 */
import { expiredLeaseKeys } from './lease';
import { NotCommittedError } from './errors';
import { log0 } from './log';
import { type Location, openStore } from './location';
import { manifestFile, parseFileName, validateStep } from './names';
import type { Store } from './store';

/** Delete a committed step: manifest first, then every other file of the step (eval, leases included). */
export async function deleteCheckpoint(dir: Location, step: number): Promise<string[]> {
  const store = openStore(dir);
  validateStep(step);
  if (!(await store.exists(manifestFile(step)))) {
    throw new NotCommittedError(`step ${step} is not committed in ${store.location}; nothing deleted`, {
      file: manifestFile(step),
      step,
    });
  }
  await store.delete(manifestFile(step));
  const removed = [manifestFile(step)];
  for (const key of await filesOfStep(store, step)) {
    await store.delete(key);
    removed.push(key);
  }
  return removed;
}

async function filesOfStep(store: Store, step: number): Promise<string[]> {
  return (await store.list()).map((e) => e.key).filter((key) => parseFileName(key)?.step === step);
}

export interface GcOptions {
  /** Files younger than this are kept (a save may be writing them right now). Default 1 hour. */
  graceMs?: number;
  dryRun?: boolean;
  now?: number;
}

export interface GcResult {
  removed: Array<{ file: string; why: string; bytes: number }>;
  keptYoung: string[];
}

export async function garbageCollect(dir: Location, options: GcOptions = {}): Promise<GcResult> {
  const store = openStore(dir);
  const graceMs = options.graceMs ?? 60 * 60_000;
  const now = options.now ?? Date.now();
  const entries = await store.list();
  const committed = new Set<number>();
  for (const e of entries) {
    const p = parseFileName(e.key);
    if (p?.kind === 'manifest' && p.step !== undefined) committed.add(p.step);
  }
  const expiredLeases = new Set(await expiredLeaseKeys(store, now));
  const result: GcResult = { removed: [], keptYoung: [] };
  for (const e of entries) {
    const p = parseFileName(e.key);
    if (!p) continue;
    let why: string | null = null;
    if (p.kind === 'temp') why = 'temp file of an unfinished write';
    else if (p.kind === 'rank-done' && !committed.has(p.step!))
      why = 'rank record of a save that never committed';
    else if (p.kind === 'rank-done') why = 'rank record of a committed save';
    else if (p.kind === 'lease' && expiredLeases.has(e.key)) why = 'expired lease';
    else if (p.kind !== 'lease' && p.step !== undefined && !committed.has(p.step))
      why = `step ${p.step} has no manifest`;
    if (!why) continue;
    if (p.kind !== 'lease' && now - e.mtimeMs < graceMs) {
      result.keptYoung.push(e.key);
      continue;
    }
    if (!options.dryRun) await store.delete(e.key);
    result.removed.push({ file: e.key, why, bytes: e.bytes });
  }
  if (result.removed.length > 0) {
    log0(
      `${options.dryRun ? 'would remove' : 'removed'} ${result.removed.length} orphan file(s) in ${store.location}`,
    );
  }
  return result;
}
