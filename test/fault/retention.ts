/**
 * Campaign 4: the retention property test scaled up. planRetention against the independent oracle in
 * test/helpers/retention-oracle.ts over FAULT_RETENTION_RUNS (default 10,000) random histories and policies.
 * Usage: npm run fault:retention   (FAULT_SEED, FAULT_RETENTION_RUNS)
 */
import fc from 'fast-check';
import { candidateArb, checkPlan, historyArb, policyArb } from '../helpers/retention-oracle';
import { envInt, report, SEED } from './lib';

const RUNS = envInt('FAULT_RETENTION_RUNS', 10_000);
// Half the histories as in the default suite (up to 30 steps), half long ones (up to 300 steps).
const longHistoryArb = fc.uniqueArray(candidateArb, { selector: (c) => c.step, maxLength: 300, size: 'max' });
const anyHistory = fc.oneof(historyArb, longHistoryArb);
const t0 = Date.now();
let runs = 0;
let maxHistory = 0;
let committedTotal = 0;
let failure: string | undefined;
try {
  fc.assert(
    fc.property(anyHistory, policyArb, (cands, policy) => {
      runs++;
      maxHistory = Math.max(maxHistory, cands.length);
      committedTotal += cands.filter((c) => c.committed).length;
      checkPlan(cands, policy);
    }),
    { numRuns: RUNS, seed: SEED },
  );
} catch (err) {
  failure = (err as Error).message.split('\n').slice(0, 12).join('\n');
}
const seconds = (Date.now() - t0) / 1000;
report(
  `fault:retention (seed ${SEED}, ${seconds.toFixed(1)} s)`,
  [
    { what: 'histories checked against the oracle', value: runs, goal: `>= ${RUNS}`, ok: runs >= RUNS },
    { what: 'plans differing from the oracle', value: failure ? 1 : 0, goal: '0', ok: !failure },
    { what: 'committed checkpoints planned', value: committedTotal, goal: 'info', ok: true },
    { what: 'longest history', value: maxHistory, goal: 'info', ok: true },
  ],
  failure ? [`counterexample:\n${failure}`] : [],
);
