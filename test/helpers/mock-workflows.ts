/**
 * Workflow tests with mocked activities (samples-typescript `workflows-mocks`): the real workflow code,
 * bundled once per test file, on the Temporal CLI's dev server (TestWorkflowEnvironment.createLocal with the
 * installed binary: nothing is downloaded), with activities that are plain functions each test supplies.
 *
 * As in production, one worker serves the train task queue (training and evaluation activities) and one the
 * control queue (workflows and light activities). Both run for the whole file; their activities dispatch to
 * the mocks of the workflow that scheduled them (by workflow id, which survives continue-as-new), so tests
 * never share state. Every call is recorded with its task queue and attempt, in order, so tests can assert
 * the order of calls ("evaluate before prune") and where they ran.
 *
 * Call `mockedWorkflows(name)` at the top level of a test file: it registers the cleanup as a root `after()`
 * hook at once; `start()` it in a `before()` hook.
 */
import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import { Context } from '@temporalio/activity';
import type { Client, WorkflowHandleWithFirstExecutionRunId, WorkflowStartOptions } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import type { Workflow } from '@temporalio/workflow';
import type { ControlActivities, TrainActivities } from '../../activities';
import type {
  CheckpointSummary,
  EvalSummary,
  PruneSummary,
  RetentionPolicy,
  SegmentInput,
  SegmentResult,
} from '../../activities/types';
import { ensureTemporalCli } from '../../infra/temporal';
import { SEARCH_ATTRIBUTES } from '../../workflows/visibility';
import type { WorkflowSettings } from '../../workflows/options';
import { waitFor } from './temporal';

export type Activities = TrainActivities & ControlActivities;
export type Mocks = Partial<Activities>;

// The role of every activity, exactly as workers/worker.ts registers them (`satisfies` fails to compile
// when an activity is added, removed or renamed): a mis-routed activity finds no worker here either.
const ROLE_OF = {
  trainSegment: 'train',
  trainRank: 'train',
  evaluateCheckpoint: 'train',
  findLastStep: 'control',
  findLargestModel: 'control',
  stepsWithoutEval: 'control',
  listCheckpoints: 'control',
  pruneCheckpoints: 'control',
  verifyCheckpoint: 'control',
  copyCheckpoints: 'control',
  releasePipelineClaim: 'control',
} as const satisfies Record<keyof Activities, 'train' | 'control'>;

export interface Call {
  activity: keyof Activities;
  input: unknown;
  taskQueue: string;
  attempt: number;
}

/** One workflow's mocks and what happened to them. */
export interface MockRun<W extends Workflow> {
  id: string;
  /** Signals, queries and updates go to the latest run; result() follows continue-as-new. */
  handle: WorkflowHandleWithFirstExecutionRunId<W>;
  /** Every activity call, in the order the workers received them. */
  calls: Call[];
  /**
   * Activity names as they were called, and whatever the mocks noted (see `note`), in one sequence. The
   * pipeline's release of its directory claim when it ends is in `calls` only (LOG_SKIPS).
   */
  log: string[];
  /** Append an event of a mock to `log`. */
  note(event: string): void;
  /** The calls of one activity. */
  callsOf(activity: keyof Activities): Call[];
  /** Resolves once `activity` has been called `count` times (default 1); its call. */
  called(activity: keyof Activities, count?: number): Promise<Call>;
}

export interface MockedWorkflowEnv {
  client: Client;
  /** The settings tests pass to workflows: both task queues of this file, quick retries, a short heartbeat. */
  settings: WorkflowSettings;
  /** A worker-specific training queue (sticky segments) that a worker of this file polls. */
  stickyQueue: string;
  /**
   * Start `workflow` on the control queue with a fresh workflow id, its activities served by `mocks` (or by
   * what `mocks(run)` returns, for mocks that note events in the run's log).
   */
  start<W extends Workflow>(
    workflow: W,
    args: Parameters<W>,
    mocks: Mocks | ((run: MockRun<W>) => Mocks),
  ): Promise<MockRun<W>>;
}

interface Registered {
  mocks: Mocks;
  calls: Call[];
  log: string[];
}

/** Calls that every ending pipeline makes, kept out of MockRun.log so that it shows the training flow. */
const LOG_SKIPS = new Set<keyof Activities>(['releasePipelineClaim']);

export function mockedWorkflows(name: string): {
  start(): Promise<MockedWorkflowEnv>;
  env(): MockedWorkflowEnv;
} {
  const runs = new Map<string, Registered>();
  let testEnv: TestWorkflowEnvironment | undefined;
  let workers: Worker[] = [];
  let running: Promise<unknown> | undefined;
  let started: MockedWorkflowEnv | undefined;
  let next = 0;

  after(async () => {
    for (const worker of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
    await running?.catch(() => undefined);
    await testEnv?.teardown();
  });

  function dispatch(activity: keyof Activities) {
    return async (...args: unknown[]): Promise<unknown> => {
      const info = Context.current().info;
      const workflowId = info.workflowExecution?.workflowId ?? '';
      const run = runs.get(workflowId);
      if (!run) throw ApplicationFailure.nonRetryable(`no mocks for workflow ${workflowId}`);
      run.calls.push({ activity, input: args[0], taskQueue: info.taskQueue, attempt: info.attempt });
      if (!LOG_SKIPS.has(activity)) run.log.push(activity);
      const mock = run.mocks[activity] as ((...a: unknown[]) => Promise<unknown>) | undefined;
      if (!mock) throw ApplicationFailure.nonRetryable(`${activity} is not mocked in this test`, 'NotMocked');
      return mock(...args);
    };
  }

  const start = async (): Promise<MockedWorkflowEnv> => {
    // Quiet: the mocks fail, time out and abandon activities on purpose; a broken workflow still shows in
    // the test's assertions.
    Runtime.install({
      logger: new DefaultLogger('ERROR'),
      telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' }, forward: {} } },
    });
    const [env, bundle] = await Promise.all([
      TestWorkflowEnvironment.createLocal({
        server: {
          executable: { type: 'existing-path', path: ensureTemporalCli() },
          searchAttributes: SEARCH_ATTRIBUTES.map((a) => a.key),
          log: { format: 'pretty', level: 'error' },
        },
      }),
      bundleWorkflowCode({
        workflowsPath: require.resolve('../../workflows'),
        logger: new DefaultLogger('ERROR'),
      }),
    ]);
    testEnv = env;
    const suffix = `${name}-${randomBytes(3).toString('hex')}`;
    const taskQueues = { train: `mock-train-${suffix}`, control: `mock-control-${suffix}` };
    const activitiesOf = (role: 'train' | 'control') =>
      Object.fromEntries(
        (Object.keys(ROLE_OF) as Array<keyof Activities>)
          .filter((a) => ROLE_OF[a] === role)
          .map((a) => [a, dispatch(a)]),
      );
    const common = {
      connection: env.nativeConnection,
      shutdownGraceTime: '1s',
      // Cancellation reaches an activity only with a heartbeat's answer: flush heartbeats often.
      maxHeartbeatThrottleInterval: '100ms',
      defaultHeartbeatThrottleInterval: '100ms',
    };
    const stickyQueue = `${taskQueues.train}@sticky`;
    workers = await Promise.all([
      Worker.create({ ...common, taskQueue: taskQueues.train, activities: activitiesOf('train') }),
      Worker.create({ ...common, taskQueue: stickyQueue, activities: activitiesOf('train') }),
      Worker.create({
        ...common,
        taskQueue: taskQueues.control,
        activities: activitiesOf('control'),
        workflowBundle: bundle,
      }),
    ]);
    running = Promise.all(workers.map((w) => w.run()));
    running.catch(() => undefined);

    const settings: WorkflowSettings = {
      taskQueues,
      activities: {
        heartbeatTimeoutMs: 2000,
        segmentTimeoutMs: 60_000,
        lightTimeoutMs: 10_000,
        maximumAttempts: 3,
        initialRetryMs: 50,
        maximumRetryMs: 100,
      },
      nonRetryableErrorTypes: ['BadInputInTest'],
    };

    started = {
      client: env.client,
      settings,
      stickyQueue,
      async start<W extends Workflow>(
        workflow: W,
        args: Parameters<W>,
        mocks: Mocks | ((run: MockRun<W>) => Mocks),
      ): Promise<MockRun<W>> {
        const id = `${suffix}-${++next}`;
        const registered: Registered = { mocks: {}, calls: [], log: [] };
        const callsOf = (activity: keyof Activities) =>
          registered.calls.filter((c) => c.activity === activity);
        const run: MockRun<W> = {
          id,
          // Set below once the workflow has started (mocks use the log and calls, never the handle).
          handle: undefined as unknown as WorkflowHandleWithFirstExecutionRunId<W>,
          calls: registered.calls,
          log: registered.log,
          note: (event) => void registered.log.push(event),
          callsOf,
          called: (activity, count = 1) =>
            waitFor(`${activity} called ${count} time(s) by ${id}`, () => callsOf(activity)[count - 1], {
              timeoutMs: 20_000,
              intervalMs: 20,
            }),
        };
        registered.mocks = typeof mocks === 'function' ? mocks(run) : mocks;
        runs.set(id, registered);
        // The options type of a generic W is a conditional type TypeScript cannot resolve here.
        const options = { taskQueue: taskQueues.control, workflowId: id, args };
        run.handle = await env.client.workflow.start(workflow, options as unknown as WorkflowStartOptions<W>);
        return run;
      },
    };
    return started;
  };

  return {
    start,
    env() {
      if (!started) throw new Error('mockedWorkflows: start() has not run (or failed)');
      return started;
    },
  };
}

/** A promise with its resolve at hand: a mock waits on it, the test releases it. */
export interface Gate<T = void> {
  promise: Promise<T>;
  open(value: T): void;
}

export function gate<T = void>(): Gate<T> {
  let open!: (value: T) => void;
  const promise = new Promise<T>((resolve) => (open = resolve));
  return { promise, open };
}

/**
 * Inside a mock activity: heartbeat while `work` is pending (cancellation reaches an activity only through
 * heartbeats) and reject with the CancelledFailure if the activity is cancelled first.
 */
export async function heartbeatWhile<T>(work: Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat();
  const timer = setInterval(() => ctx.heartbeat(), 50);
  try {
    return await Promise.race([work, ctx.cancelled]);
  } finally {
    clearInterval(timer);
  }
}

/**
 * An in-memory checkpoint directory for the mocks: committed steps and their eval results. Training commits
 * every `saveEvery` steps and the last step, as `ckpt train` does; evaluation gives each step a metric from
 * `metricsOf`; retention keeps the newest `keepLast` (the real policies are tested in test/checkpoint).
 */
export class FakeStore {
  readonly committed: number[];
  readonly evaluated = new Map<number, EvalSummary>();

  constructor(
    committed: number[] = [],
    private readonly metricsOf: (step: number) => Record<string, number> = (step) => ({
      val_bpb: 10 / step,
      val_loss: 7 / step,
    }),
  ) {
    this.committed = [...committed];
  }

  last(): number | null {
    return this.committed.length > 0 ? Math.max(...this.committed) : null;
  }

  /** Train from the last committed step (as `--resume` does) to `input.toStep`. */
  train(input: SegmentInput): SegmentResult {
    const startStep = this.last() ?? 0;
    const saved: number[] = [];
    for (let step = startStep + 1; step <= input.toStep; step++) {
      if (step % input.saveEvery === 0 || step === input.toStep) saved.push(step);
    }
    this.committed.push(...saved);
    return {
      startStep,
      endStep: input.toStep,
      saved,
      finalLoss: 5 / input.toStep,
      backend: 'mock',
      seconds: 0,
      attempt: Context.current().info.attempt,
    };
  }

  evaluate(step: number): EvalSummary {
    const result: EvalSummary = {
      step,
      metrics: this.metricsOf(step),
      metric: { name: 'val_bpb', mode: 'min' },
    };
    this.evaluated.set(step, result);
    return result;
  }

  prune(policy: RetentionPolicy): PruneSummary {
    const sorted = [...this.committed].sort((a, b) => a - b);
    const keep = policy.keepLast === undefined ? sorted : sorted.slice(-policy.keepLast);
    const deleted = sorted.filter((s) => !keep.includes(s));
    this.committed.splice(0, this.committed.length, ...keep);
    for (const step of deleted) this.evaluated.delete(step);
    return {
      keep: keep.map((step) => ({ step, reasons: ['keep-last'] })),
      remove: deleted.map((step) => ({ step, why: 'beyond keep-last' })),
      deleted,
    };
  }

  /** What listCheckpoints answers: every committed step, ascending, with its eval metrics if evaluated. */
  list(): CheckpointSummary[] {
    return [...this.committed]
      .sort((a, b) => a - b)
      .map((step) => ({
        step,
        committed: true,
        bytes: 0,
        ...(this.evaluated.has(step) ? { metrics: this.evaluated.get(step)!.metrics } : {}),
      }));
  }

  /** Mock activities over this store; `overrides` replace some of them. */
  activities(overrides: Mocks = {}): Mocks {
    return {
      trainSegment: async (input) => this.train(input),
      findLastStep: async () => this.last(),
      stepsWithoutEval: async () =>
        this.committed.filter((s) => !this.evaluated.has(s)).sort((a, b) => a - b),
      evaluateCheckpoint: async ({ step }) => this.evaluate(step),
      pruneCheckpoints: async ({ policy }) => this.prune(policy),
      listCheckpoints: async () => this.list(),
      releasePipelineClaim: async () => true,
      ...overrides,
    };
  }
}

/** Options of every describe: a workflow that never ends fails its suite instead of hanging the run. */
export const SUITE = { timeout: 60_000 };
