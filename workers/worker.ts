/**
 * Wires activities and workflows to task queues. A training worker runs the compute activities (training
 * segments, evaluation) with as many slots as it has GPUs; a control worker runs the workflows and the
 * light activities (listing, discovery, pruning). `all` runs both in one process.
 */
import { hostname } from 'node:os';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import {
  controlActivities,
  trainActivities,
  type ControlActivities,
  type TrainActivities,
} from '../activities';
import { prewarmChild } from '../activities/child';
import { gpuSlotsConfigured, trainingSlots } from '../activities/gpus';
import { configureSticky, stickyQueueName } from '../activities/sticky';
import { connectionError } from '../activities/client';
import type { ConnectAttempt } from '../activities/connection-diagnosis';
import { codecConverter } from '../activities/payload-codec';
import { registerPrograms, type ProgramRegistration } from '../activities/programs';
import type { TemporalSettings } from '../temporal.config';
import { serveMetrics, WorkerMetrics } from './metrics';

export { DEFAULT_METRICS_HOST, serveMetrics, WorkerMetrics, type MetricsServer } from './metrics';
export { installWorkerRuntime, sdkLogger, type WorkerRuntimeOptions } from './runtime';

export type WorkerRole = 'train' | 'control' | 'all';

/**
 * A cancellation (a stop, a workflow cancel) reaches a running activity only in the server's answer to a
 * heartbeat, and so does the news that its workflow is gone (terminate, reset: the answer is NotFound, and
 * the SDK cancels the activity). The SDK sends heartbeats at most every 0.8 × the heartbeat timeout (24 s
 * with the default 30 s), so a cancelled segment trained and committed on for up to that long, beside the
 * run's next writer. Once a second bounds that delay, at one small request per second per running segment.
 */
export const HEARTBEAT_THROTTLE = {
  maxHeartbeatThrottleInterval: '1s',
  defaultHeartbeatThrottleInterval: '1s',
} as const satisfies Partial<WorkerOptions>;

/**
 * Absolute path of the workflows module, for a Worker's `workflowsPath` (or `bundleWorkflowCode`). It
 * resolves to workflows/index.ts in a checkout and to dist/workflows/index.js in the installed package.
 */
export const workflowsPath: string = require.resolve('../workflows');

/** What a Worker needs to host this package's activities and (for control and all) workflows. */
export interface EmbeddedWorkerParts {
  activities: Partial<TrainActivities & ControlActivities>;
  /** Absent for the train role: training workers run no workflows. */
  workflowsPath?: string;
}

/**
 * The activities and workflowsPath of a role, to spread into another project's `Worker.create` options:
 *
 *   Worker.create({ connection, taskQueue, ...workerParts('control') })
 *
 * The pipeline schedules activities on the task queues given in its input (WorkflowSettings.taskQueues):
 * register the train role on the queue named there as `train`, and the control role on `control`. With
 * 'all' on one worker, give both names the same queue.
 */
export function workerParts(role: WorkerRole = 'all'): EmbeddedWorkerParts {
  if (role === 'train') return { activities: { ...trainActivities } };
  if (role === 'control') return { activities: { ...controlActivities }, workflowsPath };
  return { activities: { ...trainActivities, ...controlActivities }, workflowsPath };
}

export interface WorkerSetup {
  role: WorkerRole;
  settings: TemporalSettings;
  /** Override the task queue (single-role workers only). */
  taskQueue?: string;
  /** Pre-built workflow bundle (tests bundle once); default: bundle workflows/ at start. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** Default: workerIdentity(role). */
  identity?: string;
  /** Count this worker's activities into these metrics (an activity interceptor; see workers/metrics.ts). */
  metrics?: WorkerMetrics;
  /** runWorkers: serve Prometheus metrics at GET /metrics on this port. */
  metricsPort?: number;
  /** The address the metrics endpoint listens on; default DEFAULT_METRICS_HOST (this host only). */
  metricsHost?: string;
  /**
   * Training programs this worker runs by name: module paths, program objects whose module is known, or
   * commands (`{ exec, evalExec?, cwd?, metric? }`).
   */
  programs?: Record<string, ProgramRegistration>;
}

/**
 * `<role>-<pid>@<hostname>`: the Web UI and describe() name the worker that ran each task by it, so an
 * operator can tell which host (and which process there) to look at.
 */
export function workerIdentity(role: WorkerRole): string {
  return `${role}-${process.pid}@${hostname()}`;
}

export async function connectWorkerConnection(settings: TemporalSettings): Promise<NativeConnection> {
  try {
    return await NativeConnection.connect(settings.connect.connectionOptions);
  } catch (err) {
    const options = settings.connect.connectionOptions;
    throw await connectionError(
      {
        address: options.address ?? 'localhost:7233',
        tls: options.tls as ConnectAttempt['tls'],
        apiKey: options.apiKey,
      },
      settings.namespace,
      err,
    );
  }
}

export async function createWorkers(setup: WorkerSetup, connection: NativeConnection): Promise<Worker[]> {
  const { settings } = setup;
  registerPrograms(setup.programs ?? {});
  const workers: Worker[] = [];
  const common = {
    connection,
    namespace: settings.namespace,
    identity: setup.identity ?? workerIdentity(setup.role),
    // On SIGINT/SIGTERM, running segments are cancelled at once: the training child stops at a step
    // boundary and saves nothing half-done; what it committed before stays.
    shutdownGraceTime: '2s',
    ...HEARTBEAT_THROTTLE,
    // Encrypted payloads (CKPT_CODEC_KEYS): inputs, results and heartbeat details, in both directions.
    ...codecConverter(settings.codecKeys),
    ...(setup.metrics ? { interceptors: { activity: [setup.metrics.activityInterceptor()] } } : {}),
  } satisfies Partial<WorkerOptions>;
  if (setup.role === 'train' || setup.role === 'all') {
    const slots = trainingSlots(settings.trainSlots);
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: (setup.role === 'train' && setup.taskQueue) || settings.taskQueues.train,
        activities: trainActivities,
        maxConcurrentActivityTaskExecutions: slots,
      }),
    );
    // A warm child for the first segment or evaluation (and for the retry of a segment whose worker died);
    // none on GPU slots, whose children must start with their GPU chosen.
    if (slots > 0 && !gpuSlotsConfigured()) prewarmChild();
    // Sticky segments keep a child alive between a run's segments; a GPU slot's child is started for one
    // segment on its GPU, so GPU workers take the ordinary path.
    if (settings.stickySegments && !gpuSlotsConfigured()) {
      // This worker's own queue, for the next segments of runs whose state its children keep (sticky.ts).
      const queue = stickyQueueName(
        (setup.role === 'train' && setup.taskQueue) || settings.taskQueues.train,
        common.identity,
      );
      workers.push(
        await Worker.create({
          ...common,
          taskQueue: queue,
          activities: { trainSegment: trainActivities.trainSegment },
          maxConcurrentActivityTaskExecutions: slots,
        }),
      );
      configureSticky(queue, slots);
    } else configureSticky(undefined);
  }
  if (setup.role === 'control' || setup.role === 'all') {
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: (setup.role === 'control' && setup.taskQueue) || settings.taskQueues.control,
        activities: controlActivities,
        ...(setup.workflowBundle ? { workflowBundle: setup.workflowBundle } : { workflowsPath }),
      }),
    );
  }
  return workers;
}

/** Run workers until a shutdown signal (SIGINT/SIGTERM) or until `signal` aborts. */
export async function runWorkers(setup: WorkerSetup, signal?: AbortSignal): Promise<void> {
  const metrics = setup.metrics ?? (setup.metricsPort !== undefined ? new WorkerMetrics() : undefined);
  const server =
    setup.metricsPort !== undefined
      ? await serveMetrics(metrics!.registry, setup.metricsPort, setup.metricsHost)
      : undefined;
  const unobserve = metrics?.observe();
  try {
    const connection = await connectWorkerConnection(setup.settings);
    try {
      const workers = await createWorkers({ ...setup, metrics }, connection);
      signal?.addEventListener('abort', () => workers.forEach((w) => w.shutdown()), { once: true });
      await Promise.all(workers.map((w) => w.run()));
    } finally {
      await connection.close();
    }
  } finally {
    unobserve?.();
    await server?.close();
  }
}
