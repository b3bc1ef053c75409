/**
 * Which committed checkpoints to keep. Pure: the caller gathers candidates (manifests, eval files, leases)
 * and deletes what `remove` lists, so a dry run is just printing the plan.
 *
 * Each policy picks a set of steps and the kept set is their union (as Orbax's preservation policies), plus
 * an always-kept set no policy can drop: the newest and newest verified checkpoints (something to resume
 * from), leased ones (a reader is using them) and, when ranking by a metric, unevaluated ones (pruning
 * them before evaluation could throw away the best checkpoint).
 */
import { InvalidArgumentError } from './errors';
import { validateStep } from './names';

export interface RetentionCandidate {
  step: number;
  committed: boolean;
  verified: boolean;
  metrics?: Record<string, number>;
  leased?: boolean;
}

export interface KeepBest {
  k: number;
  metric: string;
  mode: 'min' | 'max';
  /** Keep checkpoints that have no value for `metric` yet. Default true. */
  keepUnevaluated?: boolean;
}

export interface RetentionPolicy {
  keepLast?: number;
  keepBest?: KeepBest;
  keepEvery?: number;
  pinned?: number[];
}

export type KeepReason =
  | 'keep-last'
  | 'keep-best'
  | 'keep-every'
  | 'pinned'
  | 'newest'
  | 'newest-verified'
  | 'unevaluated'
  | 'leased';

export interface RetentionPlan {
  keep: Array<{ step: number; reasons: KeepReason[] }>;
  remove: Array<{ step: number; why: string }>;
}

/** One rule. `select` gets the committed candidates sorted by step ascending. */
export interface PreservationPolicy {
  readonly reason: KeepReason;
  select(committed: readonly RetentionCandidate[]): Set<number>;
  /** Why this rule did not keep `c`, for the removal report; undefined for always-kept rules. */
  explain?(c: RetentionCandidate): string;
}

const steps = (cs: readonly RetentionCandidate[]) => new Set(cs.map((c) => c.step));

export function keepLastPolicy(n: number): PreservationPolicy {
  return {
    reason: 'keep-last',
    select: (cs) => steps(cs.slice(Math.max(0, cs.length - n))),
    explain: () => `older than the last ${n}`,
  };
}

/** "Lacks the metric" means no value at all; a NaN or infinite value was evaluated but cannot be ranked. */
export function hasMetric(c: RetentionCandidate, metric: string): boolean {
  return c.metrics !== undefined && Object.hasOwn(c.metrics, metric);
}

function rankableValue(c: RetentionCandidate, metric: string): number | undefined {
  const v = hasMetric(c, metric) ? c.metrics?.[metric] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

export function keepBestPolicy({ k, metric, mode }: KeepBest): PreservationPolicy {
  return {
    reason: 'keep-best',
    select(cs) {
      const ranked = cs
        .map((c) => ({ step: c.step, v: rankableValue(c, metric) }))
        .filter((r): r is { step: number; v: number } => r.v !== undefined);
      const sign = mode === 'min' ? 1 : -1;
      ranked.sort((a, b) => sign * (a.v < b.v ? -1 : a.v > b.v ? 1 : 0) || b.step - a.step);
      return new Set(ranked.slice(0, k).map((r) => r.step));
    },
    explain(c) {
      // Only reached with keepUnevaluated false: otherwise the unevaluated rule keeps it.
      if (!hasMetric(c, metric)) return `no ${metric} and keepUnevaluated is false`;
      const v = c.metrics?.[metric];
      if (rankableValue(c, metric) === undefined) return `${metric}=${String(v)} cannot be ranked`;
      return `${metric}=${v} not among the best ${k} (${mode})`;
    },
  };
}

export function keepEveryPolicy(m: number): PreservationPolicy {
  return {
    reason: 'keep-every',
    select: (cs) => steps(cs.filter((c) => c.step % m === 0)),
    explain: () => `not a multiple of ${m}`,
  };
}

export function pinnedPolicy(pinned: readonly number[]): PreservationPolicy {
  const set = new Set(pinned);
  return {
    reason: 'pinned',
    select: (cs) => steps(cs.filter((c) => set.has(c.step))),
    explain: () => 'not pinned',
  };
}

export function newestPolicy(): PreservationPolicy {
  return { reason: 'newest', select: (cs) => steps(cs.slice(-1)) };
}

export function newestVerifiedPolicy(): PreservationPolicy {
  return { reason: 'newest-verified', select: (cs) => steps(cs.filter((c) => c.verified).slice(-1)) };
}

export function unevaluatedPolicy(metric: string): PreservationPolicy {
  return { reason: 'unevaluated', select: (cs) => steps(cs.filter((c) => !hasMetric(c, metric))) };
}

export function leasedPolicy(): PreservationPolicy {
  return { reason: 'leased', select: (cs) => steps(cs.filter((c) => c.leased === true)) };
}

/** The rules a (validated) policy stands for, configured ones first, then the always-kept ones. */
export function policiesFor(policy: RetentionPolicy): PreservationPolicy[] {
  const out: PreservationPolicy[] = [];
  if (policy.keepLast !== undefined) out.push(keepLastPolicy(policy.keepLast));
  if (policy.keepBest !== undefined) out.push(keepBestPolicy(policy.keepBest));
  if (policy.keepEvery !== undefined) out.push(keepEveryPolicy(policy.keepEvery));
  if (policy.pinned !== undefined && policy.pinned.length > 0) out.push(pinnedPolicy(policy.pinned));
  out.push(newestPolicy(), newestVerifiedPolicy());
  if (policy.keepBest !== undefined && policy.keepBest.keepUnevaluated !== false) {
    out.push(unevaluatedPolicy(policy.keepBest.metric));
  }
  out.push(leasedPolicy());
  return out;
}

export function planRetention(candidates: RetentionCandidate[], policy: RetentionPolicy): RetentionPlan {
  const rules = policiesFor(validatePolicy(policy));
  const committed = checkCandidates(candidates)
    .filter((c) => c.committed)
    .sort((a, b) => a.step - b.step);
  const reasons = new Map<number, KeepReason[]>();
  for (const rule of rules) {
    for (const step of rule.select(committed)) reasons.set(step, [...(reasons.get(step) ?? []), rule.reason]);
  }
  const plan: RetentionPlan = { keep: [], remove: [] };
  for (const c of committed) {
    const kept = reasons.get(c.step);
    if (kept) {
      plan.keep.push({ step: c.step, reasons: kept });
      continue;
    }
    const clauses = rules.flatMap((r) => (r.explain ? [r.explain(c)] : []));
    clauses.push('not newest, newest verified or leased');
    plan.remove.push({ step: c.step, why: clauses.join('; ') });
  }
  return plan;
}

function checkCandidates(candidates: RetentionCandidate[]): RetentionCandidate[] {
  if (!Array.isArray(candidates)) {
    throw new InvalidArgumentError('candidates must be an array', { field: 'candidates' });
  }
  const seen = new Set<number>();
  return candidates.map((c, i) => {
    const step = validateStep(c?.step, `candidates[${i}].step`);
    // Two entries for one step would make "newest" and "best" ambiguous: the caller has a bug.
    if (seen.has(step)) {
      throw new InvalidArgumentError(`candidates list step ${step} twice`, { field: 'candidates', step });
    }
    seen.add(step);
    return { ...c, step };
  });
}

function show(v: unknown): string {
  return typeof v === 'string'
    ? JSON.stringify(v)
    : typeof v === 'object' && v !== null
      ? 'an object'
      : String(v);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Unknown keys are errors: a misspelt `keeplast` would otherwise silently keep nothing. */
function rejectUnknownKeys(obj: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      const field = where ? `${where}.${key}` : key;
      throw new InvalidArgumentError(`unknown retention option ${field} (known: ${allowed.join(', ')})`, {
        field,
      });
    }
  }
}

function integer(v: unknown, field: string, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new InvalidArgumentError(`${field} must be an integer >= ${min}, got ${show(v)}`, { field });
  }
  return v;
}

/** Checks a policy from user input and returns a normalized copy (pinned steps as numbers, deduplicated). */
export function validatePolicy(policy: unknown): RetentionPolicy {
  if (!isRecord(policy)) {
    throw new InvalidArgumentError(`retention policy must be an object, got ${show(policy)}`, {
      field: 'policy',
    });
  }
  rejectUnknownKeys(policy, ['keepLast', 'keepBest', 'keepEvery', 'pinned'], '');
  const out: RetentionPolicy = {};
  if (policy.keepLast !== undefined) out.keepLast = integer(policy.keepLast, 'keepLast', 0);
  if (policy.keepEvery !== undefined) out.keepEvery = integer(policy.keepEvery, 'keepEvery', 1);
  const best = policy.keepBest;
  if (best !== undefined) {
    if (!isRecord(best)) {
      throw new InvalidArgumentError(`keepBest must be an object, got ${show(best)}`, { field: 'keepBest' });
    }
    rejectUnknownKeys(best, ['k', 'metric', 'mode', 'keepUnevaluated'], 'keepBest');
    const k = integer(best.k, 'keepBest.k', 1);
    if (typeof best.metric !== 'string' || best.metric.trim() === '') {
      throw new InvalidArgumentError(`keepBest.metric must be a non-empty string, got ${show(best.metric)}`, {
        field: 'keepBest.metric',
      });
    }
    if (best.mode !== 'min' && best.mode !== 'max') {
      throw new InvalidArgumentError(`keepBest.mode must be "min" or "max", got ${show(best.mode)}`, {
        field: 'keepBest.mode',
      });
    }
    if (best.keepUnevaluated !== undefined && typeof best.keepUnevaluated !== 'boolean') {
      throw new InvalidArgumentError(
        `keepBest.keepUnevaluated must be a boolean, got ${show(best.keepUnevaluated)}`,
        {
          field: 'keepBest.keepUnevaluated',
        },
      );
    }
    out.keepBest = { k, metric: best.metric, mode: best.mode };
    if (best.keepUnevaluated !== undefined) out.keepBest.keepUnevaluated = best.keepUnevaluated;
  }
  if (policy.pinned !== undefined) {
    if (!Array.isArray(policy.pinned)) {
      throw new InvalidArgumentError(`pinned must be an array of steps, got ${show(policy.pinned)}`, {
        field: 'pinned',
      });
    }
    out.pinned = [...new Set(policy.pinned.map((s, i) => validateStep(s, `pinned[${i}]`)))];
  }
  return out;
}
