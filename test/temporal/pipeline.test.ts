/**
 * trainingPipeline on a real dev server, driven through the `ckpt pipeline` commands as an operator would:
 * segments end bit-for-bit where `ckpt train` ends, continue-as-new keeps that, pause/resume/stop and the
 * status query behave as documented, a second start on a running tag is refused, and the setTargetSteps
 * update moves the finish line.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { SegmentResult } from '../../activities/types';
import { committedSteps, openStore } from '../../checkpoint';
import type { PipelineState } from '../../workflows/pipeline';
import {
  pendingActivities,
  sha256,
  SMALL_MODEL,
  sleep,
  temporalEnv,
  waitFor,
  type TemporalTestEnv,
} from '../helpers/temporal';

const T = temporalEnv('pipeline');
let env: TemporalTestEnv;
/** sha256 of model_000012 / optim_000012_rank0 after `ckpt train --steps 12 --save-every 4`. */
let reference: { model: string; optim: string };

const dirOf = (root: string, tag: string) => join(root, 'base_checkpoints', tag);
const step6 = (step: number) => String(step).padStart(6, '0');
const filesAt = (dir: string, step: number) => ({
  model: sha256(join(dir, `model_${step6(step)}.safetensors`)),
  optim: sha256(join(dir, `optim_${step6(step)}_rank0.safetensors`)),
});

async function start(tag: string, flags: string[]): Promise<{ id: string; dir: string }> {
  const root = join(env.dir, 'runs');
  const res = await env.ckpt(['pipeline', 'start', '--root', root, '--tag', tag, ...SMALL_MODEL, ...flags]);
  assert.equal(res.code, 0, res.stderr);
  return { id: res.stdout.trim(), dir: dirOf(root, tag) };
}

/** The pipeline's result (following continue-as-new), bounded. */
async function result(id: string, timeoutMs = 120_000): Promise<PipelineState> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    env.client.workflow.getHandle(id).result() as Promise<PipelineState>,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`pipeline ${id} did not end within ${timeoutMs} ms`)),
        timeoutMs,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

interface StatusJson {
  state: string;
  step: number;
  stepSource: string;
  workflowStatus: string;
  targetSteps?: number;
  lastCheckpoint?: number | null;
}

/** `ckpt pipeline status ID --json`: exactly one JSON object on stdout. */
async function statusJson(id: string): Promise<StatusJson> {
  const res = await env.ckpt(['pipeline', 'status', id, '--json'], { timeoutMs: 60_000 });
  assert.equal(res.code, 0, res.stderr);
  const parsed = JSON.parse(res.stdout) as StatusJson;
  assert.equal(typeof parsed, 'object');
  assert.ok(!Array.isArray(parsed));
  assert.equal(typeof parsed.state, 'string');
  assert.equal(typeof parsed.step, 'number');
  return parsed;
}

before(async () => {
  env = await T.start();
  const refRun = env.ckpt([
    'train',
    '--root',
    join(env.dir, 'ref'),
    '--tag',
    'ref',
    ...SMALL_MODEL,
    '--steps',
    '12',
    '--save-every',
    '4',
  ]);
  await env.startWorker('all');
  const ref = await refRun;
  assert.equal(ref.code, 0, ref.stderr);
  reference = filesAt(dirOf(join(env.dir, 'ref'), 'ref'), 12);
});

describe('a pipeline of several segments', () => {
  it('completes, evaluates, prunes, and its final model and optimizer files equal those of ckpt train', async () => {
    const { id, dir } = await start('segments', [
      '--steps',
      '12',
      '--segment-steps',
      '4',
      '--save-every',
      '4',
      '--eval',
      '--keep-last',
      '2',
    ]);
    const state = await result(id);
    assert.equal(state.state, 'completed');
    assert.equal(state.step, 12);
    assert.equal(state.segment, 3);
    assert.equal(state.runs, 1);
    assert.equal(state.lastCheckpoint, 12);
    assert.deepEqual(
      state.evals.map((e) => e.step),
      [4, 8, 12],
    );
    assert.deepEqual(state.pruned, [4]);
    assert.deepEqual(filesAt(dir, 12), reference);
  });
});

/** trainSegment's scheduled queue and completed result, in order, from the pipeline's history. */
async function segmentsOf(id: string): Promise<Array<{ queue: string; result: SegmentResult }>> {
  const history = await env.client.workflow.getHandle(id).fetchHistory();
  const queues = new Map<string, string>();
  const out: Array<{ queue: string; result: SegmentResult }> = [];
  for (const e of history.events ?? []) {
    const scheduled = e.activityTaskScheduledEventAttributes;
    if (scheduled?.activityType?.name === 'trainSegment')
      queues.set(String(e.eventId), scheduled.taskQueue!.name!);
    const completed = e.activityTaskCompletedEventAttributes;
    const queue = completed ? queues.get(String(completed.scheduledEventId)) : undefined;
    if (completed && queue !== undefined)
      out.push({ queue, result: defaultPayloadConverter.fromPayload(completed.result!.payloads![0]!) });
  }
  return out;
}

describe('sticky segments', () => {
  it("a run's next segments go to the worker that kept its state and continue in memory, bit for bit", async () => {
    const { id, dir } = await start('sticky', ['--steps', '12', '--segment-steps', '4', '--save-every', '4']);
    const state = await result(id);
    assert.equal(state.state, 'completed');
    assert.equal(state.retries, 0);
    const segments = await segmentsOf(id);
    assert.equal(segments.length, 3);
    const [first, ...rest] = segments;
    assert.doesNotMatch(first!.queue, /@/, 'the first segment goes to the shared queue');
    assert.equal(first!.result.inMemory, undefined, 'the first segment starts a process');
    assert.equal(first!.result.stickyQueue?.startsWith(`${first!.queue}@all-`), true);
    for (const s of rest) {
      assert.equal(s.queue, first!.result.stickyQueue, 'scheduled on the worker that kept the state');
      assert.equal(s.result.inMemory, true, 'continued in memory, no checkpoint read');
    }
    assert.deepEqual(filesAt(dir, 12), reference);
  });
});

describe('continue-as-new', () => {
  it('chains one run per segment with --segments-per-run 1 and changes nothing in the weights', async () => {
    const { id, dir } = await start('chained', [
      '--steps',
      '12',
      '--segment-steps',
      '4',
      '--save-every',
      '4',
      '--segments-per-run',
      '1',
    ]);
    const state = await result(id);
    assert.equal(state.state, 'completed');
    assert.equal(state.step, 12);
    assert.equal(state.runs, 3);
    assert.equal(state.segment, 3);
    // The server holds the chain: two runs that continued as new, then the one that completed.
    const runs = await waitFor(
      'the three runs in visibility',
      async () => {
        const found: Array<{ runId: string; status: string; start: number }> = [];
        for await (const w of env.client.workflow.list({ query: `WorkflowId = '${id}'` })) {
          found.push({ runId: w.runId, status: w.status.name, start: w.startTime.getTime() });
        }
        // Visibility is eventually consistent: wait until it also shows the last run closed.
        found.sort((a, b) => a.start - b.start);
        return found.length >= 3 && found.at(-1)!.status !== 'RUNNING' ? found : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    assert.deepEqual(
      runs.map((r) => r.status),
      ['CONTINUED_AS_NEW', 'CONTINUED_AS_NEW', 'COMPLETED'],
    );
    const first = await env.client.workflow.getHandle(id, runs[0]!.runId).describe();
    assert.equal(first.status.name, 'CONTINUED_AS_NEW');
    assert.deepEqual(filesAt(dir, 12), reference);
  });
});

describe('pause, resume, stop and the status query', () => {
  // Long segments (600 steps: several seconds even at ~100 steps/s) so that heartbeats reach the server
  // mid-segment and a stop lands while a segment runs; the target is never reached.
  const SEGMENT = 600;
  const SAVE_EVERY = 50;
  let id: string;
  let dir: string;
  let liveStep: number;
  let pausedAt: number;

  it("status --json shows the live step from the running segment's heartbeat", async () => {
    ({ id, dir } = await start('control', [
      '--steps',
      '100000',
      '--segment-steps',
      String(SEGMENT),
      '--save-every',
      String(SAVE_EVERY),
    ]));
    const live = await waitFor(
      'a status whose step comes from the heartbeat',
      async () => {
        const s = await statusJson(id);
        return s.stepSource === 'heartbeat' && s.step > 0 ? s : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 0 },
    );
    assert.equal(live.state, 'running');
    assert.equal(live.workflowStatus, 'RUNNING');
    // Live: ahead of the workflow's own step, which moves only when a segment ends.
    const query = await env.client.workflow.getHandle(id).query<PipelineState>('status');
    assert.ok(
      live.step > query.step || query.step % SEGMENT === 0,
      `heartbeat step ${live.step}, query step ${query.step}`,
    );
    liveStep = live.step;
  });

  it('pause takes effect after the running segment: state paused, the step stops advancing', async () => {
    const res = await env.ckpt(['pipeline', 'pause', id]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, /pause sent/);
    // The running segment is not cut short: it ends at its own end step, then nothing runs.
    const paused = await waitFor(
      'the pipeline to settle paused',
      async () => {
        const pending = await pendingActivities(env.client, id);
        const s = await statusJson(id);
        return s.state === 'paused' && pending.length === 0 ? s : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 0 },
    );
    assert.equal(paused.step % SEGMENT, 0, `paused at ${paused.step}: a segment boundary`);
    assert.ok(
      paused.step >= liveStep && paused.step > 0,
      `paused at ${paused.step}, after the live step ${liveStep}`,
    );
    assert.equal(paused.stepSource, 'query');
    assert.equal(paused.lastCheckpoint, paused.step);
    pausedAt = paused.step;
    await sleep(3000);
    const later = await statusJson(id);
    assert.equal(later.state, 'paused');
    assert.equal(later.step, pausedAt);
    assert.deepEqual(await pendingActivities(env.client, id), []);
    assert.equal((await committedSteps(openStore(dir))).at(-1), pausedAt);
  });

  it('resume continues from where it paused', async () => {
    const res = await env.ckpt(['pipeline', 'resume', id]);
    assert.equal(res.code, 0, res.stderr);
    // Progress on disk: the next checkpoint of the new segment (sooner than a throttled heartbeat).
    await waitFor(
      'a checkpoint after the paused step',
      async () => ((await committedSteps(openStore(dir))).at(-1) ?? 0) > pausedAt,
      {
        timeoutMs: 90_000,
        intervalMs: 100,
      },
    );
    const s = await env.client.workflow.getHandle(id).query<PipelineState>('status');
    assert.equal(s.state, 'running');
    assert.equal(s.step, pausedAt);
  });

  it('stop cancels the running segment; the pipeline ends stopped on a committed, verified checkpoint', async () => {
    // At once (a client signal, as `ckpt pipeline stop` sends; that command is exercised below), so that
    // it lands early in the segment.
    await env.client.workflow.getHandle(id).signal('stop');
    const state = await result(id);
    assert.equal(state.state, 'stopped');
    // Cut short: the segment did not reach its end step.
    assert.ok(state.step > pausedAt && state.step < pausedAt + SEGMENT, `stopped at ${state.step}`);
    assert.equal(state.lastCheckpoint, state.step);
    const history = await env.client.workflow.getHandle(id).fetchHistory();
    assert.ok(
      history.events?.some((e) => e.activityTaskCanceledEventAttributes),
      'the running segment was cancelled (ActivityTaskCanceled in the history)',
    );
    const last = await env.ckpt(['last-step', dir]);
    assert.equal(last.code, 0, last.stderr);
    assert.equal(Number(last.stdout.trim()), state.step);
    const verify = await env.ckpt(['verify', dir]);
    assert.equal(verify.code, 0, verify.stderr);
    const s = await statusJson(id);
    assert.equal(s.state, 'stopped');
    assert.equal(s.step, state.step);
    assert.equal(s.stepSource, 'result');
  });
});

describe('a second pipeline start on a running tag', () => {
  it('is refused with exit 2 and a message naming the running pipeline', async () => {
    const flags = ['--steps', '100000', '--segment-steps', '1000', '--save-every', '100'];
    const { id } = await start('twice', flags);
    try {
      const again = await env.ckpt([
        'pipeline',
        'start',
        '--root',
        join(env.dir, 'runs'),
        '--tag',
        'twice',
        ...SMALL_MODEL,
        ...flags,
      ]);
      assert.equal(again.code, 2, again.stderr);
      assert.equal(again.stdout, '');
      assert.match(
        again.stderr,
        /^ckpt: error: a pipeline is already running on .*twice.*\(workflow id ckpt-pipeline-twice-[0-9a-f]+\)/m,
      );
      assert.ok(again.stderr.includes(id), again.stderr);
    } finally {
      const stop = await env.ckpt(['pipeline', 'stop', id]);
      assert.equal(stop.code, 0, stop.stderr);
    }
    assert.equal((await result(id)).state, 'stopped');
  });
});

describe('the setTargetSteps update', () => {
  it('changes the target of a running pipeline, which then stops there; an invalid target is rejected', async () => {
    const { id, dir } = await start('retarget', [
      '--steps',
      '400',
      '--segment-steps',
      '8',
      '--save-every',
      '4',
    ]);
    const handle = env.client.workflow.getHandle(id);
    await assert.rejects(
      handle.executeUpdate<PipelineState, [number]>('setTargetSteps', { args: [0] }),
      WorkflowUpdateFailedError,
    );
    const updated = await handle.executeUpdate<PipelineState, [number]>('setTargetSteps', { args: [16] });
    assert.equal(updated.targetSteps, 16);
    const state = await result(id);
    assert.equal(state.state, 'completed');
    assert.equal(state.targetSteps, 16);
    assert.equal(state.step, 16);
    const last = await env.ckpt(['last-step', dir]);
    assert.equal(Number(last.stdout.trim()), 16);
  });
});
