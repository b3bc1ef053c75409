/**
 * Replay: every history in test/fixtures/histories (recorded from real runs by scripts/record-history.ts)
 * must replay against the current workflow code without a non-determinism error. These histories stand for
 * the pipelines running in production when new workers are deployed: workers replay a run's history to
 * rebuild its state, and a workflow whose commands differ from its history fails there.
 *
 * So: a change to workflow code (workflows/*.ts) that changes which commands a run issues, or their order
 * (activities, timers, continue-as-new, update/signal handling...), must be guarded with
 * `patched('change-id')` from @temporalio/workflow — old code path when replaying an old history, new one
 * otherwise — until no run of the old code is left (then `deprecatePatch`). Do not re-record the histories
 * to make this test pass: that is only for a deliberate break (see scripts/record-history.ts).
 *
 * The last test proves the guard works: a workflow with one activity call moved (test/fixtures/
 * workflows-reordered), registered under the same type name, fails to replay with a
 * DeterminismViolationError, while the same change behind `patched()` (test/fixtures/workflows-patched)
 * replays. No server is needed: replay runs in-process.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Worker } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { historyFromJSON } from '../helpers/history';

const DIR = join(__dirname, '..', 'fixtures', 'histories');

function histories() {
  const files = readdirSync(DIR)
    .filter((f) => f.endsWith('.json'))
    .sort();
  return files.map((file) => ({
    workflowId: file,
    history: historyFromJSON(JSON.parse(readFileSync(join(DIR, file), 'utf8'))),
  }));
}

async function replayAll(workflowsPath: string) {
  const results: Array<{ file: string; error?: Error }> = [];
  for await (const r of Worker.runReplayHistories({ workflowsPath }, histories()))
    results.push({ file: r.workflowId, error: r.error });
  return results;
}

describe('recorded workflow histories', () => {
  it('cover a completed pipeline with evaluation, retention, an update, signals and a continue-as-new', () => {
    const all = histories();
    assert.ok(all.length >= 2, `histories in ${DIR}: ${all.length}`);
    const events = all.flatMap((h) => h.history.events ?? []);
    const has = (attr: string) => events.some((e) => (e as Record<string, unknown>)[attr]);
    assert.ok(has('workflowExecutionContinuedAsNewEventAttributes'), 'a continue-as-new');
    assert.ok(has('workflowExecutionCompletedEventAttributes'), 'a completed run');
    assert.ok(has('workflowExecutionUpdateAcceptedEventAttributes'), 'an update');
    assert.ok(has('workflowExecutionSignaledEventAttributes'), 'a signal');
    const activities = new Set(
      events.map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean),
    );
    for (const name of [
      'findLastStep',
      'trainSegment',
      'stepsWithoutEval',
      'evaluateCheckpoint',
      'pruneCheckpoints',
    ]) {
      assert.ok(activities.has(name), `activity ${name} in the histories`);
    }
  });

  it('replay against the current workflow code without a non-determinism error', async () => {
    const results = await replayAll(require.resolve('../../workflows'));
    assert.ok(results.length >= 2);
    for (const r of results) assert.equal(r.error, undefined, `${r.file}: ${r.error?.stack ?? r.error}`);
  });

  it('fail to replay with a DeterminismViolationError against a workflow whose activity order changed', async () => {
    const results = await replayAll(require.resolve('../fixtures/workflows-reordered'));
    assert.ok(results.length >= 2);
    for (const r of results) {
      assert.ok(
        r.error instanceof DeterminismViolationError,
        `${r.file}: expected a DeterminismViolationError, got ${r.error?.stack ?? r.error}`,
      );
      assert.match(
        r.error.message,
        /Nondeterminism error: Activity type of scheduled event '\w+' does not match .*'listCheckpoints'/,
      );
    }
  });

  it('replay against the same change made behind patched() (test/fixtures/workflows-patched)', async () => {
    const results = await replayAll(require.resolve('../fixtures/workflows-patched'));
    assert.ok(results.length >= 2);
    for (const r of results) assert.equal(r.error, undefined, `${r.file}: ${r.error?.stack ?? r.error}`);
  });
});
