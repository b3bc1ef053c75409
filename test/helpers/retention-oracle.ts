/**
 * The retention oracle shared by the property test (test/checkpoint/retention.test.ts) and the scaled
 * fault campaign (test/fault/retention.ts): per committed step, the reasons it must be kept, computed by
 * counting rather than sorting, plus the arbitraries that generate histories and policies.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  planRetention,
  type KeepReason,
  type RetentionCandidate,
  type RetentionPlan,
  type RetentionPolicy,
} from '../../checkpoint/retention';

const keptSteps = (plan: RetentionPlan) => plan.keep.map((k) => k.step);

export const METRICS = ['loss', 'acc', 'constructor'];

/** Per committed step, the reasons it must be kept, computed by counting rather than sorting. */
export function oracle(cands: RetentionCandidate[], policy: RetentionPolicy): Map<number, Set<KeepReason>> {
  const committed = cands.filter((c) => c.committed);
  const has = (c: RetentionCandidate, m: string) => c.metrics !== undefined && Object.hasOwn(c.metrics, m);
  const value = (c: RetentionCandidate, m: string) => {
    const v = has(c, m) ? c.metrics?.[m] : undefined;
    return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  };
  const newest = Math.max(...committed.map((c) => c.step));
  const newestVerified = Math.max(...committed.filter((c) => c.verified).map((c) => c.step));
  const out = new Map<number, Set<KeepReason>>();
  for (const c of committed) {
    const r = new Set<KeepReason>();
    if (policy.keepLast !== undefined && committed.filter((o) => o.step > c.step).length < policy.keepLast) {
      r.add('keep-last');
    }
    const best = policy.keepBest;
    const v = best && value(c, best.metric);
    if (best && v !== undefined) {
      const better = committed.filter((o) => {
        const w = value(o, best.metric);
        if (w === undefined) return false;
        return (best.mode === 'min' ? w < v : w > v) || (w === v && o.step > c.step);
      });
      if (better.length < best.k) r.add('keep-best');
    }
    if (policy.keepEvery !== undefined && c.step % policy.keepEvery === 0) r.add('keep-every');
    if (policy.pinned?.includes(c.step)) r.add('pinned');
    if (c.step === newest) r.add('newest');
    if (c.step === newestVerified) r.add('newest-verified');
    if (best && best.keepUnevaluated !== false && !has(c, best.metric)) r.add('unevaluated');
    if (c.leased === true) r.add('leased');
    if (r.size > 0) out.set(c.step, r);
  }
  return out;
}

const stepArb = fc.oneof(
  fc.integer({ min: 0, max: 40 }),
  fc.integer({ min: 0, max: 3_000_000 }),
  fc.constantFrom(999_999, 1_000_000, 1_000_001),
);
const metricValue = fc.oneof(
  fc.integer({ min: -3, max: 3 }),
  fc.double(),
  fc.constantFrom(NaN, Infinity, -Infinity),
);
export const candidateArb = fc.record(
  {
    step: stepArb,
    committed: fc.boolean(),
    verified: fc.boolean(),
    metrics: fc.dictionary(fc.constantFrom(...METRICS), metricValue, { maxKeys: 3 }),
    leased: fc.boolean(),
  },
  { requiredKeys: ['step', 'committed', 'verified'] },
);
export const historyArb = fc.uniqueArray(candidateArb, { selector: (c) => c.step, maxLength: 30 });
export const policyArb: fc.Arbitrary<RetentionPolicy> = fc.record(
  {
    keepLast: fc.nat(8),
    keepBest: fc.record(
      {
        k: fc.integer({ min: 1, max: 6 }),
        metric: fc.constantFrom(...METRICS),
        mode: fc.constantFrom('min' as const, 'max' as const),
        keepUnevaluated: fc.boolean(),
      },
      { requiredKeys: ['k', 'metric', 'mode'] },
    ),
    keepEvery: fc.oneof(fc.integer({ min: 1, max: 12 }), fc.constant(250_000)),
    pinned: fc.array(stepArb, { maxLength: 6 }),
  },
  { requiredKeys: [] },
);

/** Asserts that planRetention(cands, policy) matches the oracle and the named safety guarantees. */
export function checkPlan(cands: RetentionCandidate[], policy: RetentionPolicy): void {
  const plan = planRetention(cands, policy);
  const committed = cands.filter((c) => c.committed).map((c) => c.step);
  const kept = keptSteps(plan);
  const removed = plan.remove.map((r) => r.step);
  const all = [...kept, ...removed];
  // keep ∪ remove == committed, disjoint, each sorted ascending
  assert.deepEqual(
    [...all].sort((a, b) => a - b),
    [...committed].sort((a, b) => a - b),
  );
  assert.equal(new Set(all).size, all.length);
  assert.deepEqual(
    kept,
    [...kept].sort((a, b) => a - b),
  );
  assert.deepEqual(
    removed,
    [...removed].sort((a, b) => a - b),
  );
  for (const r of plan.remove) assert.ok(r.why.length > 0);

  const expected = oracle(cands, policy);
  assert.deepEqual(
    kept,
    [...expected.keys()].sort((a, b) => a - b),
  );
  for (const k of plan.keep) {
    assert.equal(new Set(k.reasons).size, k.reasons.length, 'reasons listed once');
    assert.deepEqual(new Set(k.reasons), expected.get(k.step), `reasons for step ${k.step}`);
  }

  // The named safety guarantees, computed straight from the history.
  const gone = new Set(removed);
  const live = cands.filter((c) => c.committed);
  const best = policy.keepBest;
  const mustStay = [
    Math.max(...live.map((c) => c.step)),
    Math.max(...live.filter((c) => c.verified).map((c) => c.step)),
    ...live.filter((c) => policy.pinned?.includes(c.step) || c.leased === true).map((c) => c.step),
    ...[...expected].filter(([, r]) => r.has('keep-best')).map(([step]) => step),
    ...(best && best.keepUnevaluated !== false
      ? live.filter((c) => !c.metrics || !Object.hasOwn(c.metrics, best.metric)).map((c) => c.step)
      : []),
  ];
  for (const step of mustStay.filter(Number.isFinite)) assert.ok(!gone.has(step), `${step} removed`);
}
