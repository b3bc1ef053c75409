/**
 * What `ckpt report` shows, gathered from a checkpoint directory (or every tag of every configured source
 * under a root): each checkpoint's state (committed, verified, evaluated, best, leased, pinned, which
 * retention rules keep it), the loss history from the checkpoints' meta, val_bpb from their eval files, and
 * the steps retention pruned, from the directory's retention log.
 */
import {
  activeLeases,
  type CheckpointInfo,
  joinLocation,
  type KeepReason,
  listCheckpoints,
  metaFile,
  NoCheckpointError,
  openStore,
  parseFileName,
  planRetention,
  readManifest,
  readRetentionLog,
  type RetentionLogEntry,
  type RetentionPolicy,
  type Store,
  validateName,
} from '../checkpoint';
import type { CkptConfig } from '../temporal.config';

export const METRIC = 'val_bpb';

export interface ReportCheckpoint {
  step: number;
  committed: boolean;
  /** Set for committed steps: every file matches its manifest. */
  verified?: boolean;
  problems: string[];
  evaluated: boolean;
  valBpb?: number;
  best: boolean;
  /** Holders of active leases ("holder until ISO time"). */
  leases: string[];
  pinned: boolean;
  bytes: number;
  files: number;
  committedAt?: string;
  backend?: string;
  /** The last loss of the checkpoint's loss_history. */
  loss?: number;
  /** With a policy: the rules that keep it, or why it would be pruned. */
  keptBy?: KeepReason[];
  wouldPrune?: string;
}

export interface ReportTarget {
  /** "source/tag" under a root, the directory's name otherwise. */
  label: string;
  location: string;
  checkpoints: ReportCheckpoint[];
  /** Latest retention-log entry of each pruned step that has no checkpoint now, ascending. */
  pruned: RetentionLogEntry[];
  loss: Array<{ step: number; loss: number }>;
  bpb: Array<{ step: number; val_bpb: number; pruned: boolean }>;
  warnings: string[];
}

export interface ReportData {
  location: string;
  mode: 'dir' | 'root';
  generatedAt: string;
  policy?: RetentionPolicy;
  targets: ReportTarget[];
}

const STEP_KINDS = new Set(['model', 'optim', 'meta', 'manifest', 'eval', 'retention-log']);

/** Whether `store` is itself a checkpoint directory (it holds checkpoint files or a retention log). */
async function isCheckpointDir(store: Store): Promise<boolean> {
  return (await store.list()).some((e) => STEP_KINDS.has(parseFileName(e.key)?.kind ?? ''));
}

async function validTags(store: Store): Promise<string[]> {
  const tags: string[] = [];
  for (const tag of await store.listDirs()) {
    try {
      tags.push(validateName(tag, 'tag'));
    } catch {
      // not a tag directory of ours
    }
  }
  return tags.sort();
}

export async function collectReport(
  location: string,
  config: Pick<CkptConfig, 'sources'>,
  policy?: RetentionPolicy,
): Promise<ReportData> {
  const store = openStore(location);
  const generatedAt = new Date().toISOString();
  if (await isCheckpointDir(store)) {
    const label = store.location.replace(/\/+$/, '').split(/[\\/]/).pop() || store.location;
    return {
      location: store.location,
      mode: 'dir',
      generatedAt,
      policy,
      targets: [await collectTarget(store, label, policy)],
    };
  }
  const targets: ReportTarget[] = [];
  for (const [source, dirName] of Object.entries(config.sources)) {
    const sourceStore = openStore(joinLocation(location, dirName));
    for (const tag of await validTags(sourceStore)) {
      const dir = openStore(joinLocation(location, dirName, tag));
      if (await isCheckpointDir(dir)) targets.push(await collectTarget(dir, `${source}/${tag}`, policy));
    }
  }
  if (targets.length === 0) {
    const dirs = Object.values(config.sources).join(', ');
    throw new NoCheckpointError(
      `nothing to report in ${store.location}: no checkpoint files, and no tags under the configured source directories (${dirs})`,
      { file: store.location },
    );
  }
  return { location: store.location, mode: 'root', generatedAt, policy, targets };
}

interface MetaSummary {
  lossHistory: Array<[number, number]>;
  backend?: string;
}

function lossPairs(value: unknown): Array<[number, number]> {
  if (!Array.isArray(value)) return [];
  return value.filter(
    (p): p is [number, number] =>
      Array.isArray(p) &&
      p.length === 2 &&
      typeof p[0] === 'number' &&
      typeof p[1] === 'number' &&
      Number.isFinite(p[1]),
  );
}

async function readMetaSummary(store: Store, step: number, warnings: string[]): Promise<MetaSummary> {
  try {
    const meta = JSON.parse((await store.read(metaFile(step))).toString('utf8')) as Record<string, unknown>;
    return {
      lossHistory: lossPairs(meta.loss_history),
      backend: typeof meta.backend === 'string' ? meta.backend : undefined,
    };
  } catch (err) {
    warnings.push(`step ${step}: cannot read ${metaFile(step)} (${(err as Error).message})`);
    return { lossHistory: [] };
  }
}

function finiteMetric(info: CheckpointInfo): number | undefined {
  const v = info.metrics?.[METRIC];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

async function collectTarget(store: Store, label: string, policy?: RetentionPolicy): Promise<ReportTarget> {
  const warnings: string[] = [];
  const infos = await listCheckpoints(store, { verify: true });
  const leases = await activeLeases(store);
  const log = await readRetentionLog(store);
  const committed = new Set(infos.filter((i) => i.committed).map((i) => i.step));
  const pinned = new Set(policy?.pinned ?? log[log.length - 1]?.policy.pinned ?? []);

  const lossByStep = new Map<number, number>();
  const checkpoints: ReportCheckpoint[] = [];
  for (const info of infos) {
    const c: ReportCheckpoint = {
      step: info.step,
      committed: info.committed,
      problems: (info.problems ?? []).map((p) => p.message),
      evaluated: info.metrics !== undefined,
      valBpb: finiteMetric(info),
      best: false,
      leases: leases.filter((l) => l.step === info.step).map((l) => `${l.holder} until ${l.expiresAt}`),
      pinned: info.committed && pinned.has(info.step),
      bytes: info.bytes,
      files: info.files.length,
    };
    if (info.committed) {
      c.verified = info.verified;
      const meta = await readMetaSummary(store, info.step, warnings);
      for (const [s, l] of meta.lossHistory) lossByStep.set(s, l);
      c.loss = meta.lossHistory[meta.lossHistory.length - 1]?.[1];
      c.backend = meta.backend;
      c.committedAt = await readManifest(store, info.step).then(
        (m) => m.committed_at,
        () => undefined,
      );
    }
    checkpoints.push(c);
  }
  markBest(checkpoints);
  if (policy) applyPolicy(checkpoints, infos, policy);

  // The latest entry per step; a step committed again since it was pruned is shown as it is now.
  const prunedByStep = new Map<number, RetentionLogEntry>();
  for (const entry of log) if (!committed.has(entry.step)) prunedByStep.set(entry.step, entry);
  const pruned = [...prunedByStep.values()].sort((a, b) => a.step - b.step);
  for (const entry of pruned) {
    for (const [s, l] of lossPairs(entry.loss_history)) if (!lossByStep.has(s)) lossByStep.set(s, l);
  }

  const bpb = [
    ...checkpoints
      .filter((c) => c.committed && c.valBpb !== undefined)
      .map((c) => ({ step: c.step, val_bpb: c.valBpb!, pruned: false })),
    ...pruned
      .filter((e) => typeof e.metrics?.[METRIC] === 'number' && Number.isFinite(e.metrics[METRIC]))
      .map((e) => ({ step: e.step, val_bpb: e.metrics![METRIC]!, pruned: true })),
  ].sort((a, b) => a.step - b.step);
  const loss = [...lossByStep.entries()].sort((a, b) => a[0] - b[0]).map(([step, l]) => ({ step, loss: l }));
  return { label, location: store.location, checkpoints, pruned, loss, bpb, warnings };
}

/** Best = lowest val_bpb among committed checkpoints; on a tie the newer one (as keep-best ranks). */
function markBest(checkpoints: ReportCheckpoint[]): void {
  let best: ReportCheckpoint | undefined;
  for (const c of checkpoints) {
    if (!c.committed || c.valBpb === undefined) continue;
    if (!best || c.valBpb < best.valBpb! || (c.valBpb === best.valBpb && c.step > best.step)) best = c;
  }
  if (best) best.best = true;
}

/** What the retention planner would do with `policy` now, with the same candidates `ckpt prune` builds. */
function applyPolicy(
  checkpoints: ReportCheckpoint[],
  infos: CheckpointInfo[],
  policy: RetentionPolicy,
): void {
  const newestVerified = Math.max(
    -1,
    ...checkpoints.filter((c) => c.committed && c.verified).map((c) => c.step),
  );
  const plan = planRetention(
    infos
      .filter((i) => i.committed)
      .map((i) => ({
        step: i.step,
        committed: true,
        verified: i.step === newestVerified,
        metrics: i.metrics,
        leased: checkpoints.some((c) => c.step === i.step && c.leases.length > 0),
      })),
    policy,
  );
  for (const c of checkpoints) {
    c.keptBy = plan.keep.find((k) => k.step === c.step)?.reasons;
    c.wouldPrune = plan.remove.find((r) => r.step === c.step)?.why;
  }
}
