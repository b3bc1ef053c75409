/**
 * What the Temporal Web UI, `temporal workflow describe` and `temporal workflow metadata` show of our
 * workflows, on a real dev server with one `ckpt worker --role all`: which worker ran each task (its identity
 * names the host), what a pipeline's signals, queries and updates do, a pipeline's one-line summary, the
 * search attributes of the runs schedules start, and `ckpt pipeline status` of an id that does not exist.
 * No model is trained: the pipeline runs with --noop.
 */
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { Client } from '@temporalio/client';
import type { SearchAttributePair, TypedSearchAttributes } from '@temporalio/common';
import { msToTs } from '@temporalio/common/lib/time';
import type { PipelineInput, PipelineState } from '../../workflows/pipeline';
import { CkptDir, CkptTag } from '../../workflows/visibility';
import {
  temporalEnv,
  waitFor,
  withTimeout,
  type TemporalTestEnv,
  type TestWorker,
} from '../helpers/temporal';

const T = temporalEnv('conventions');
let env: TemporalTestEnv;
let worker: TestWorker;
/** A finished two-segment --noop pipeline. */
let pipeline: { id: string; dir: string };

interface HandlerDefinition {
  name?: string;
  description?: string;
}
/** The answer to the built-in `__temporal_workflow_metadata` query (what `temporal workflow metadata` prints). */
interface WorkflowMetadata {
  definition?: {
    type?: string;
    queryDefinitions?: HandlerDefinition[];
    signalDefinitions?: HandlerDefinition[];
    updateDefinitions?: HandlerDefinition[];
  };
}

const metadata = (workflowId: string) =>
  env.client.workflow.getHandle(workflowId).query<WorkflowMetadata>('__temporal_workflow_metadata');

function descriptionOf(definitions: HandlerDefinition[] | undefined, name: string): string {
  const found = definitions?.find((d) => d.name === name);
  assert.ok(found, `no handler ${name} in ${JSON.stringify(definitions)}`);
  return found.description ?? '';
}

/** A keyword attribute of a schedule's action (typed either way by the SDK). */
function actionAttribute(
  attributes: SearchAttributePair[] | TypedSearchAttributes | undefined,
  key: typeof CkptTag,
): string | undefined {
  if (attributes === undefined) return undefined;
  if (Array.isArray(attributes))
    return attributes.find((pair) => pair.key.name === key.name)?.value as string | undefined;
  return attributes.get(key);
}

before(async () => {
  env = await T.start();
  worker = await env.startWorker('all');
  const root = join(env.dir, 'runs');
  const started = await env.ckpt([
    'pipeline',
    'start',
    '--root',
    root,
    '--tag',
    'conv',
    '--depth',
    '1',
    '--steps',
    '4',
    '--segment-steps',
    '2',
    '--noop',
  ]);
  assert.equal(started.code, 0, started.stderr);
  pipeline = { id: started.stdout.trim(), dir: join(root, 'base_checkpoints', 'conv') };
  const state = await withTimeout(
    env.client.workflow.getHandle(pipeline.id).result() as Promise<PipelineState>,
    60_000,
    `pipeline ${pipeline.id}`,
  );
  assert.equal(state.state, 'completed');
});

describe('worker identity', () => {
  it('is <role>-<pid>@<hostname>: the history names that worker for every workflow task and activity', async () => {
    const expected = `all-${worker.pid}@${hostname()}`;
    assert.equal(worker.identity, expected);
    const events = (await env.client.workflow.getHandle(pipeline.id).fetchHistory()).events ?? [];
    const identities = [
      ...events.flatMap((e) => e.workflowTaskCompletedEventAttributes?.identity ?? []),
      ...events.flatMap((e) => e.activityTaskStartedEventAttributes?.identity ?? []),
    ];
    // Workflow tasks, and at least findLastStep and two segments.
    assert.ok(identities.length >= 5, JSON.stringify(identities));
    assert.deepEqual([...new Set(identities)], [expected]);
  });
});

describe('what the Web UI shows of a pipeline', () => {
  it('ckpt pipeline start gives it a one-line summary (train DIR to step N) and details', async () => {
    const description = await env.client.workflow.getHandle(pipeline.id).describe();
    assert.equal(await description.staticSummary(), `train ${pipeline.dir} to step 4`);
    const details = (await description.staticDetails()) ?? '';
    assert.match(details, /segments of 2 steps/);
    assert.match(details, /world size 1/);
  });

  it('every signal, query and update of the pipeline has a description', async () => {
    const { definition } = await metadata(pipeline.id);
    assert.equal(definition?.type, 'trainingPipeline');
    const described = [
      ...['pause', 'resume', 'stop'].map((n) => descriptionOf(definition?.signalDefinitions, n)),
      descriptionOf(definition?.queryDefinitions, 'status'),
      ...['setTargetSteps', 'setRetention'].map((n) => descriptionOf(definition?.updateDefinitions, n)),
    ];
    for (const d of described) assert.ok(d.length > 10, JSON.stringify(definition));
    assert.match(descriptionOf(definition?.signalDefinitions, 'pause'), /[Pp]ause/);
  });

  it("a multi-rank pipeline's rendezvous update has one too", async () => {
    // Nobody polls this training queue: the ranks never start, the handler is registered all the same.
    const settings = {
      ...env.settings,
      taskQueues: { ...env.settings.taskQueues, train: `${env.taskQueues.train}-nobody` },
    };
    const input: PipelineInput = {
      dir: join(env.dir, 'runs', 'base_checkpoints', 'ranks'),
      targetSteps: 2,
      segmentSteps: 2,
      saveEvery: 2,
      flags: {},
      evaluate: false,
      worldSize: 2,
      settings,
    };
    const handle = await env.client.workflow.start('trainingPipeline', {
      taskQueue: env.taskQueues.control,
      workflowId: `conventions-ranks-${Date.now()}`,
      args: [input],
    });
    try {
      const { definition } = await waitFor('the metadata query', () => metadata(handle.workflowId), {
        timeoutMs: 30_000,
      });
      assert.ok(descriptionOf(definition?.updateDefinitions, 'joinRendezvous').length > 10);
    } finally {
      await handle.terminate('test done');
    }
  });
});

describe('runs started by schedules carry CkptTag and CkptDir', () => {
  it('eval and retention schedules: the schedule action and the run it starts have both', async () => {
    const dir = join(env.dir, 'runs', 'base_checkpoints', 'scheduled');
    for (const kind of ['eval', 'retention'] as const) {
      const created = await env.ckpt([
        'schedule',
        kind,
        'create',
        '--dir',
        dir,
        '--every',
        '1h',
        ...(kind === 'retention' ? ['--keep-last', '2'] : []),
      ]);
      assert.equal(created.code, 0, created.stderr);
      assert.doesNotMatch(created.stderr, /search attribute/);
      const id = created.stdout.trim();
      const schedule = env.client.schedule.getHandle(id);
      try {
        const action = (await schedule.describe()).action;
        assert.equal(actionAttribute(action.typedSearchAttributes, CkptTag), 'scheduled');
        assert.equal(actionAttribute(action.typedSearchAttributes, CkptDir), dir);

        const triggered = await env.ckpt(['schedule', 'trigger', id]);
        assert.equal(triggered.code, 0, triggered.stderr);
        const run = await waitFor(
          `the run of ${id}`,
          async () => (await schedule.describe()).info.recentActions[0]?.action,
          { timeoutMs: 30_000, intervalMs: 200 },
        );
        const description = await env.client.workflow.getHandle(run.workflow.workflowId).describe();
        assert.equal(description.type, kind === 'eval' ? 'evaluateNewCheckpoints' : 'applyRetention');
        assert.equal(description.typedSearchAttributes.get(CkptTag), 'scheduled');
        assert.equal(description.typedSearchAttributes.get(CkptDir), dir);
      } finally {
        await schedule.delete();
      }
    }
  });

  it('in a namespace without them, a schedule is created without them after one note on how to register them', async () => {
    const namespace = 'bare-schedules';
    await env.client.connection.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: msToTs(86_400_000),
    });
    const created = await waitFor(
      'a schedule in the new namespace',
      async () => {
        const r = await env.ckpt(
          ['schedule', 'eval', 'create', '--dir', join(env.dir, 'bare'), '--every', '1h'],
          { env: { TEMPORAL_NAMESPACE: namespace } },
        );
        return r.code === 0 ? r : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 1000 },
    );
    const notes = created.stderr.split('\n').filter((line) => /search attribute/.test(line));
    assert.equal(notes.length, 1, created.stderr);
    assert.ok(
      notes[0]!.includes(
        `temporal operator search-attribute create --namespace ${namespace} --name CkptTag --type Keyword`,
      ),
      notes[0],
    );
    const client = new Client({ connection: env.client.connection, namespace });
    const action = (await client.schedule.getHandle(created.stdout.trim()).describe()).action;
    assert.equal(actionAttribute(action.typedSearchAttributes, CkptTag), undefined);
    assert.equal(actionAttribute(action.typedSearchAttributes, CkptDir), undefined);
  });
});

describe('ckpt pipeline status|pause ID of a workflow that does not exist', () => {
  it('exits 1 with one error line naming the workflow id, and prints nothing on stdout', async () => {
    const runs = await Promise.all([
      env.ckpt(['pipeline', 'status', 'NOSUCH']),
      env.ckpt(['pipeline', 'pause', 'NOSUCH']),
    ]);
    for (const r of runs) {
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      const lines = r.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
      assert.deepEqual(lines, ['ckpt: error: no pipeline with workflow id NOSUCH'], r.stderr);
    }
  });
});
