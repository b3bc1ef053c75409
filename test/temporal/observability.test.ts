/**
 * What operators see of running pipelines, on a real dev server with `ckpt worker` processes: the search
 * attributes and memo of a pipeline (found with a visibility query, kept across continue-as-new), the
 * pipeline's start in a namespace that lacks the attributes, a worker's Prometheus metrics after a small
 * pipeline (checked against the files on disk), and the worker's log lines (JSON without a terminal, text
 * with CKPT_LOG_FORMAT=text).
 */
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { Client, WorkflowFailedError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { msToTs } from '@temporalio/common/lib/time';
import { Worker } from '@temporalio/worker';
import { freePort } from '../../infra/temporal';
import type { PipelineInput, PipelineState } from '../../workflows/pipeline';
import { CkptBest, CkptDir, CkptState, CkptStep, CkptTag } from '../../workflows/visibility';
import {
  SMALL_MODEL,
  temporalEnv,
  waitFor,
  withTimeout,
  type TemporalTestEnv,
  type TestWorker,
} from '../helpers/temporal';

const T = temporalEnv('observability');
let env: TemporalTestEnv;
let worker: TestWorker;
let metricsPort: number;
let sdkMetricsPort: number;
/** The pipeline every check below looks at: 8 steps in two segments of 4, one run each, evaluated. */
let seen: { id: string; dir: string; state: PipelineState };

const TAG = 'seen';

async function startPipeline(tag: string, flags: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const root = join(env.dir, 'runs');
  const res = await env.ckpt(['pipeline', 'start', '--root', root, '--tag', tag, ...SMALL_MODEL, ...flags], {
    env: extraEnv,
  });
  return { res, id: res.stdout.trim(), dir: join(root, 'base_checkpoints', tag) };
}

before(async () => {
  env = await T.start();
  metricsPort = await freePort();
  sdkMetricsPort = await freePort();
  worker = await env.startWorker('all', {
    args: ['--metrics-port', String(metricsPort), '--sdk-metrics-port', String(sdkMetricsPort)],
    // The second segment reads the first one's checkpoint back, which the load metrics count; with sticky
    // segments it would continue in memory and read nothing (test/temporal/pipeline.test.ts covers that).
    env: { CKPT_STICKY_SEGMENTS: '0' },
  });
  const { res, id, dir } = await startPipeline(TAG, [
    '--steps',
    '8',
    '--segment-steps',
    '4',
    '--save-every',
    '4',
    '--eval',
    '--segments-per-run',
    '1',
  ]);
  assert.equal(res.code, 0, res.stderr);
  // Every attribute is registered on the dev server: no note about registering them.
  assert.doesNotMatch(res.stderr, /search attribute/);
  const state = await withTimeout(
    env.client.workflow.getHandle(id).result() as Promise<PipelineState>,
    180_000,
    `pipeline ${id}`,
  );
  assert.equal(state.state, 'completed');
  assert.equal(state.step, 8);
  assert.equal(state.runs, 2);
  assert.ok(state.bestMetric, 'evaluated: a best metric');
  seen = { id, dir, state };
});

describe('search attributes and memo', () => {
  it('a visibility query by CkptTag finds every run of the pipeline; CkptStep reaches the target, CkptBest the best metric, CkptState completed', async () => {
    const runs = await waitFor(
      'the completed run with CkptStep 8 in visibility',
      async () => {
        const found = [];
        for await (const w of env.client.workflow.list({ query: `CkptTag = "${TAG}"` })) found.push(w);
        const done = found.find((w) => w.status.name === 'COMPLETED');
        return done && done.typedSearchAttributes.get(CkptStep) === 8 && found.length >= 2
          ? found
          : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    assert.deepEqual(runs.map((w) => w.status.name).sort(), ['COMPLETED', 'CONTINUED_AS_NEW']);
    for (const w of runs) {
      // Set by `ckpt pipeline start` on the first run, kept by continue-as-new.
      assert.equal(w.workflowId, seen.id);
      assert.equal(w.typedSearchAttributes.get(CkptTag), TAG);
      assert.equal(w.typedSearchAttributes.get(CkptDir), seen.dir);
    }
    const first = runs.find((w) => w.status.name === 'CONTINUED_AS_NEW')!;
    assert.equal(first.typedSearchAttributes.get(CkptStep), 4, 'the first run ended after one segment');
    assert.equal(first.typedSearchAttributes.get(CkptState), 'running');
    const last = runs.find((w) => w.status.name === 'COMPLETED')!;
    assert.equal(last.typedSearchAttributes.get(CkptBest), seen.state.bestMetric!.value);
    assert.equal(last.typedSearchAttributes.get(CkptState), 'completed');
    // A numeric filter on the workflow-maintained attribute.
    const reached = [];
    for await (const w of env.client.workflow.list({ query: `CkptTag = "${TAG}" AND CkptStep >= 8` }))
      reached.push(w.runId);
    assert.deepEqual(reached, [last.runId]);
  });

  it('the memo holds step, target, best metric and state; ckpt pipeline status shows it', async () => {
    const description = await env.client.workflow.getHandle(seen.id).describe();
    assert.deepEqual(description.memo, {
      dir: seen.dir,
      tag: TAG,
      targetSteps: 8,
      step: 8,
      state: 'completed',
      bestMetric: seen.state.bestMetric,
    });
    const status = await env.ckpt(['pipeline', 'status', seen.id, '--json']);
    assert.equal(status.code, 0, status.stderr);
    assert.deepEqual((JSON.parse(status.stdout) as { memo: unknown }).memo, description.memo);
    const text = await env.ckpt(['pipeline', 'status', seen.id]);
    assert.match(text.stdout, /^memo +\{.*"state":"completed".*\}$/m);
  });

  it('the runs that upserted them replay against the workflow code (the upserts are deterministic)', async () => {
    const histories = [];
    for await (const w of env.client.workflow.list({ query: `WorkflowId = '${seen.id}'` })) {
      const history = await env.client.workflow.getHandle(seen.id, w.runId).fetchHistory();
      const events = history.events ?? [];
      assert.ok(
        events.some((e) => e.upsertWorkflowSearchAttributesEventAttributes),
        `run ${w.runId} upserted search attributes`,
      );
      assert.ok(
        events.some((e) => e.workflowPropertiesModifiedEventAttributes),
        `run ${w.runId} upserted its memo`,
      );
      histories.push({ workflowId: `${seen.id}/${w.runId}`, history });
    }
    assert.equal(histories.length, 2);
    for await (const r of Worker.runReplayHistories(
      { workflowsPath: require.resolve('../../workflows') },
      histories,
    )) {
      assert.equal(r.error, undefined, `${r.workflowId}: ${r.error?.stack ?? r.error}`);
    }
  });

  it('in a namespace without the attributes the pipeline starts without them, after one note on how to register them', async () => {
    const namespace = 'bare';
    await env.client.connection.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: msToTs(86_400_000),
    });
    const { res, id } = await waitFor(
      'a pipeline start in the new namespace',
      async () => {
        const started = await startPipeline('bare', ['--steps', '4'], { TEMPORAL_NAMESPACE: namespace });
        return started.res.code === 0 ? started : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 1000 },
    );
    const notes = res.stderr.split('\n').filter((line) => /search attribute/.test(line));
    assert.equal(notes.length, 1, res.stderr);
    for (const [name, type] of [
      ['CkptTag', 'Keyword'],
      ['CkptDir', 'Keyword'],
      ['CkptStep', 'Int'],
      ['CkptBest', 'Double'],
      ['CkptState', 'Keyword'],
    ]) {
      assert.ok(
        notes[0]!.includes(
          `temporal operator search-attribute create --namespace ${namespace} --name ${name} --type ${type}`,
        ),
        notes[0],
      );
    }
    const client = new Client({ connection: env.client.connection, namespace });
    const handle = client.workflow.getHandle(id);
    try {
      const description = await handle.describe();
      assert.equal(description.typedSearchAttributes.get(CkptTag), undefined);
      const history = await handle.fetchHistory();
      const payload = history.events![0]!.workflowExecutionStartedEventAttributes!.input!.payloads![0]!;
      const input = defaultPayloadConverter.fromPayload(payload as never) as PipelineInput;
      assert.deepEqual(input.searchAttributes, []);
    } finally {
      await handle.terminate('test done');
    }
  });
});

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition. */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(): Promise<{
  text: string;
  value(name: string, labels?: Record<string, string>): number | undefined;
}> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const samples = parseMetrics(text);
  return {
    text,
    value(name, labels = {}) {
      const s = samples.find(
        (x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v),
      );
      return s?.value;
    },
  };
}

/** Bytes of the files a single-rank checkpoint of `step` has (model, optimizer shard, meta). */
function checkpointBytes(dir: string, step: number): number {
  const s6 = String(step).padStart(6, '0');
  const names = readdirSync(dir).filter((f) =>
    [`model_${s6}.safetensors`, `optim_${s6}_rank0.safetensors`, `meta_${s6}.json`].includes(f),
  );
  assert.equal(names.length, 3, `checkpoint files of step ${step} in ${dir}`);
  return names.reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);
}

describe('worker metrics (ckpt worker --metrics-port)', () => {
  it('GET /metrics counts the steps, saves, resume, segments and evaluations of the pipeline', async () => {
    const m = await scrape();
    const dir = { dir: seen.dir };
    assert.equal(m.value('ckpt_training_steps_total', dir), 8);
    assert.equal(m.value('ckpt_training_step', dir), 8);
    assert.equal(m.value('ckpt_training_loss', dir), seen.state.loss);
    assert.equal(m.value('ckpt_training_steps_per_second', dir), 0, 'no segment running');
    // Two saves (steps 4 and 8), their bytes those of the files on disk.
    assert.equal(m.value('ckpt_checkpoint_save_seconds_count'), 2);
    assert.ok(m.value('ckpt_checkpoint_save_seconds_sum')! > 0);
    assert.equal(
      m.value('ckpt_checkpoint_save_bytes_total'),
      checkpointBytes(seen.dir, 4) + checkpointBytes(seen.dir, 8),
    );
    // The second segment resumed from step 4 and read all of its files; the first started from scratch.
    assert.equal(m.value('ckpt_checkpoint_load_seconds_count'), 1);
    assert.ok(m.value('ckpt_checkpoint_load_seconds_sum')! > 0);
    assert.equal(m.value('ckpt_checkpoint_load_bytes_total'), checkpointBytes(seen.dir, 4));
    assert.equal(m.value('ckpt_segments_completed_total'), 2);
    assert.equal(m.value('ckpt_evaluations_total'), 2);
    assert.equal(
      m.value('ckpt_eval_metric', { ...dir, metric: 'val_bpb' }),
      seen.state.evals.at(-1)!.metrics.val_bpb,
    );
    assert.equal(
      m.value('ckpt_activity_seconds_count', { activity_type: 'trainSegment', outcome: 'completed' }),
      2,
    );
    assert.equal(
      m.value('ckpt_activity_seconds_count', { activity_type: 'evaluateCheckpoint', outcome: 'completed' }),
      2,
    );
    assert.match(m.text, /^# TYPE ckpt_activity_failures_total counter$/m);
    assert.match(m.text, /^# TYPE ckpt_checkpoint_save_seconds histogram$/m);
    assert.ok(m.value('process_resident_memory_bytes')! > 0, 'Node process metrics');
    const other = await fetch(`http://127.0.0.1:${metricsPort}/`);
    assert.equal(other.status, 404);
  });

  it("--sdk-metrics-port exports the Temporal SDK's own metrics", async () => {
    const res = await fetch(`http://127.0.0.1:${sdkMetricsPort}/metrics`);
    assert.equal(res.status, 200);
    const samples = parseMetrics(await res.text());
    const polls = samples.filter(
      (s) => s.name === 'temporal_long_request' && s.labels.operation === 'PollActivityTaskQueue',
    );
    assert.deepEqual(
      polls.map((s) => s.labels.task_queue).sort(),
      [env.taskQueues.control, env.taskQueues.train].sort(),
    );
    assert.ok(polls.every((s) => s.value > 0));
  });

  it('counts a failed activity attempt by activity type', async () => {
    const { res, id } = await startPipeline('broken', [
      '--steps',
      '4',
      '--data',
      join(env.dir, 'missing.txt'),
    ]);
    assert.equal(res.code, 0, res.stderr);
    await assert.rejects(
      withTimeout(env.client.workflow.getHandle(id).result(), 120_000, `pipeline ${id}`),
      WorkflowFailedError,
    );
    const m = await scrape();
    // Unreadable data is bad input: not retried, one failed attempt.
    assert.equal(m.value('ckpt_activity_failures_total', { activity_type: 'trainSegment' }), 1);
    assert.equal(
      m.value('ckpt_activity_seconds_count', { activity_type: 'trainSegment', outcome: 'failed' }),
      1,
    );
    assert.equal(m.value('ckpt_training_steps_total', { dir: seen.dir }), 8, 'nothing trained');
  });
});

describe('worker logs', () => {
  it('without a terminal, every line a worker writes to stderr is a JSON record with level and msg', () => {
    let text = worker.log();
    // log() keeps the last 64 KiB: its first line may be cut.
    if (text.length >= 65536) text = text.slice(text.indexOf('\n') + 1);
    const lines = text.split('\n').filter(Boolean);
    const records = lines.map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        assert.fail(`not a JSON line: ${line}`);
      }
    });
    for (const r of records) {
      assert.equal(typeof r.level, 'number');
      assert.equal(typeof r.msg, 'string');
    }
    // The SDK's own lines and an activity's ctx.log line, in the same format.
    assert.ok(
      records.some(
        (r) => r.msg === 'Worker state changed' && r.sdkComponent === 'worker' && r.state === 'RUNNING',
      ),
    );
    const committed = records.find(
      (r) => r.msg === 'checkpoint committed' && r.dir === seen.dir && r.step === 8,
    );
    assert.ok(committed, 'the activity logged the commit of step 8');
    assert.equal(committed.sdkComponent, 'activity');
    assert.equal(committed.activityType, 'trainSegment');
    assert.ok((committed.bytes as number) > 0);
  });

  it('CKPT_LOG_FORMAT=text: one readable line per record', async () => {
    const textWorker = await env.startWorker('control', { env: { CKPT_LOG_FORMAT: 'text' } });
    await textWorker.stop();
    const lines = textWorker.log().split('\n').filter(Boolean);
    assert.ok(lines.length > 0);
    for (const line of lines) {
      assert.match(line, /^ckpt: /, line);
      assert.throws(() => JSON.parse(line));
    }
    assert.ok(
      lines.some((l) => /^ckpt: Worker state changed .*state=RUNNING/.test(l)),
      lines.join('\n'),
    );
  });
});
