import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { checkPlan, historyArb, policyArb } from '../helpers/retention-oracle';
import { InvalidArgumentError } from '../../checkpoint/errors';
import {
  keepBestPolicy,
  keepEveryPolicy,
  keepLastPolicy,
  leasedPolicy,
  newestPolicy,
  newestVerifiedPolicy,
  pinnedPolicy,
  planRetention,
  unevaluatedPolicy,
  validatePolicy,
  type RetentionCandidate,
  type RetentionPlan,
} from '../../checkpoint/retention';

const ck = (step: number, extra: Partial<RetentionCandidate> = {}): RetentionCandidate => ({
  step,
  committed: true,
  verified: false,
  ...extra,
});
const cks = (steps: number[]) => steps.map((s) => ck(s));
const sel = (p: { select(cs: readonly RetentionCandidate[]): Set<number> }, cs: RetentionCandidate[]) =>
  [...p.select(cs)].sort((a, b) => a - b);
const keptSteps = (plan: RetentionPlan) => plan.keep.map((k) => k.step);
const reasonsOf = (plan: RetentionPlan, step: number) => plan.keep.find((k) => k.step === step)?.reasons;

describe('keep-last', () => {
  const cs = [10, 20, 30, 40].map((s) => ck(s));
  it('keeps the N highest steps', () => assert.deepEqual(sel(keepLastPolicy(2), cs), [30, 40]));
  it('keeps nothing for 0 and everything for N >= count', () => {
    assert.deepEqual(sel(keepLastPolicy(0), cs), []);
    assert.deepEqual(sel(keepLastPolicy(9), cs), [10, 20, 30, 40]);
  });
  it('orders steps numerically past 999999', () => {
    const plan = planRetention([ck(1_000_000), ck(999_999), ck(5)], { keepLast: 2 });
    assert.deepEqual(keptSteps(plan), [999_999, 1_000_000]);
    assert.deepEqual(
      plan.remove.map((r) => r.step),
      [5],
    );
  });
});

describe('keep-best', () => {
  const cs = [
    ck(1, { metrics: { loss: 3 } }),
    ck(2, { metrics: { loss: 1 } }),
    ck(3, { metrics: { loss: 2 } }),
    ck(4, { metrics: { loss: 1 } }),
    ck(5, { metrics: { loss: NaN } }),
    ck(6, { metrics: { loss: -Infinity } }),
    ck(7, { metrics: { acc: 0.9 } }),
    ck(8),
  ];
  it('min keeps the K lowest, ties to the higher step', () => {
    assert.deepEqual(sel(keepBestPolicy({ k: 1, metric: 'loss', mode: 'min' }), cs), [4]);
    assert.deepEqual(sel(keepBestPolicy({ k: 3, metric: 'loss', mode: 'min' }), cs), [2, 3, 4]);
  });
  it('max keeps the K highest', () => {
    assert.deepEqual(sel(keepBestPolicy({ k: 2, metric: 'loss', mode: 'max' }), cs), [1, 3]);
  });
  it('ranks only finite values and keeps fewer when fewer are rankable', () => {
    assert.deepEqual(sel(keepBestPolicy({ k: 10, metric: 'loss', mode: 'min' }), cs), [1, 2, 3, 4]);
  });
  it('does not read metric names from the prototype', () => {
    assert.deepEqual(sel(unevaluatedPolicy('constructor'), [ck(1, { metrics: {} })]), [1]);
  });
});

describe('keep-every', () => {
  it('keeps multiples of M, step 0 included', () => {
    assert.deepEqual(sel(keepEveryPolicy(100), cks([0, 50, 100, 150, 200])), [0, 100, 200]);
  });
});

describe('pinned', () => {
  it('keeps listed steps that exist, ignores the rest', () => {
    assert.deepEqual(sel(pinnedPolicy([20, 99]), cks([10, 20, 30])), [20]);
  });
});

describe('always-kept set', () => {
  it('newest and newest verified', () => {
    const cs = [ck(10, { verified: true }), ck(20, { verified: true }), ck(30)];
    assert.deepEqual(sel(newestPolicy(), cs), [30]);
    assert.deepEqual(sel(newestVerifiedPolicy(), cs), [20]);
    const plan = planRetention(cs, { keepLast: 0 });
    assert.deepEqual(plan.keep, [
      { step: 20, reasons: ['newest-verified'] },
      { step: 30, reasons: ['newest'] },
    ]);
  });
  it('leased', () => {
    assert.deepEqual(sel(leasedPolicy(), [ck(1, { leased: true }), ck(2)]), [1]);
    assert.deepEqual(reasonsOf(planRetention([ck(1, { leased: true }), ck(2)], {}), 1), ['leased']);
  });
  it('unevaluated only with keep-best, unless keepUnevaluated is false', () => {
    const cs = [ck(1), ck(2, { metrics: { loss: 1 } }), ck(3, { metrics: { loss: 2 } })];
    const best = { k: 1, metric: 'loss', mode: 'min' } as const;
    assert.deepEqual(keptSteps(planRetention(cs, {})), [3]);
    assert.deepEqual(keptSteps(planRetention(cs, { keepBest: best })), [1, 2, 3]);
    assert.deepEqual(reasonsOf(planRetention(cs, { keepBest: best }), 1), ['unevaluated']);
    assert.deepEqual(keptSteps(planRetention(cs, { keepBest: { ...best, keepUnevaluated: false } })), [2, 3]);
  });
  it('never plans uncommitted checkpoints, even pinned or leased ones', () => {
    const plan = planRetention([ck(1), ck(2, { committed: false, leased: true, verified: true })], {
      pinned: [2],
    });
    assert.deepEqual(plan, { keep: [{ step: 1, reasons: ['newest'] }], remove: [] });
  });
  it('keeps nothing from an empty history', () => {
    assert.deepEqual(planRetention([], { keepLast: 3 }), { keep: [], remove: [] });
  });
});

describe('union and dry-run reasons', () => {
  const cs = [0, 100, 150, 200, 250].map((s) => ck(s, { metrics: { loss: 1000 - s }, verified: s <= 150 }));
  const plan = planRetention(cs, {
    keepLast: 1,
    keepEvery: 100,
    keepBest: { k: 1, metric: 'loss', mode: 'max' },
    pinned: [100],
  });
  it('keeps the union and lists every reason', () => {
    assert.deepEqual(plan.keep, [
      { step: 0, reasons: ['keep-best', 'keep-every'] },
      { step: 100, reasons: ['keep-every', 'pinned'] },
      { step: 150, reasons: ['newest-verified'] },
      { step: 200, reasons: ['keep-every'] },
      { step: 250, reasons: ['keep-last', 'newest'] },
    ]);
    assert.deepEqual(plan.remove, []);
  });
  it('says why each removed step goes', () => {
    const p = planRetention([ck(1, { metrics: { loss: 5 } }), ck(2, { metrics: { loss: NaN } }), ck(4)], {
      keepLast: 1,
      keepEvery: 4,
      keepBest: { k: 1, metric: 'loss', mode: 'min', keepUnevaluated: false },
    });
    assert.deepEqual(keptSteps(p), [1, 4]);
    const why = p.remove.find((r) => r.step === 2)?.why ?? '';
    for (const part of ['older than the last 1', 'loss=NaN cannot be ranked', 'not a multiple of 4']) {
      assert.ok(why.includes(part), `${JSON.stringify(why)} lacks ${part}`);
    }
  });
  it('does not depend on input order', () => {
    assert.deepEqual(planRetention([...cs].reverse(), { keepLast: 2 }), planRetention(cs, { keepLast: 2 }));
  });
});

describe('validation', () => {
  const bad: Array<[unknown, string]> = [
    [null, 'policy'],
    [{ keepLast: -1 }, 'keepLast'],
    [{ keepLast: 1.5 }, 'keepLast'],
    [{ keepLast: '3' }, 'keepLast'],
    [{ keeplast: 3 }, 'keeplast'],
    [{ keepEvery: 0 }, 'keepEvery'],
    [{ keepBest: 1 }, 'keepBest'],
    [{ keepBest: { k: 0, metric: 'loss', mode: 'min' } }, 'keepBest.k'],
    [{ keepBest: { k: 1, metric: ' ', mode: 'min' } }, 'keepBest.metric'],
    [{ keepBest: { k: 1, metric: 'loss', mode: 'lowest' } }, 'keepBest.mode'],
    [{ keepBest: { k: 1, metric: 'loss', mode: 'min', keepUnevaluated: 'no' } }, 'keepBest.keepUnevaluated'],
    [{ keepBest: { k: 1, metric: 'loss', mode: 'min', top: 1 } }, 'keepBest.top'],
    [{ pinned: 5 }, 'pinned'],
    [{ pinned: [5, -1] }, 'pinned[1]'],
  ];
  for (const [policy, field] of bad) {
    it(`rejects ${JSON.stringify(policy)} naming ${field}`, () => {
      assert.throws(
        () => validatePolicy(policy),
        (err: unknown) => err instanceof InvalidArgumentError && err.field === field,
      );
    });
  }
  it('normalizes pinned steps', () => {
    assert.deepEqual(validatePolicy({ pinned: [5, '5', '000007'] }), { pinned: [5, 7] });
  });
  it('planRetention validates the policy and rejects duplicate or invalid steps', () => {
    assert.throws(() => planRetention([ck(1)], { keepLast: -2 }), InvalidArgumentError);
    assert.throws(() => planRetention([ck(1), ck(1, { committed: false })], {}), InvalidArgumentError);
    assert.throws(() => planRetention([ck(-1)], {}), InvalidArgumentError);
  });
});

// ---- Property test against an independent oracle (test/helpers/retention-oracle.ts) ------------------

describe('property: plan equals the union of independently computed policies', () => {
  it('holds over random histories and policies', () => {
    fc.assert(
      fc.property(historyArb, policyArb, (cands, policy) => {
        checkPlan(cands, policy);
      }),
      { numRuns: 2000, seed: 20240611 },
    );
  });
});
