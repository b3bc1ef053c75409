/**
 * Prometheus metrics of a worker process, served over HTTP (`ckpt worker --metrics-port P`, GET /metrics).
 *
 * Training runs in child processes; their progress, save and resume events reach this process through the
 * activities (activities/observe.ts) and are counted here. Activity outcomes are counted by an activity
 * interceptor. A segment killed with its worker is not counted anywhere: that worker is gone; the retry
 * on another worker counts what it trains and loads. Label `dir` is the checkpoint directory (one series
 * per pipeline a worker has run); `activity_type` is the Temporal activity name.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { collectDefaultMetrics, Counter, exponentialBuckets, Gauge, Histogram, Registry } from 'prom-client';
import { observeActivities, type ActivityEvent } from '../activities/observe';

/** 10 ms to ~20 min, doubling: small checkpoints on local disk to large ones on object storage. */
const IO_BUCKETS = exponentialBuckets(0.01, 2, 18);
/** 10 ms to 8 h: light activities to long training segments. */
const ACTIVITY_BUCKETS = [0.01, 0.1, 1, 10, 60, 300, 1800, 7200, 28800];

export class WorkerMetrics {
  readonly registry = new Registry();

  private counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []) {
    return new Counter<L>({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: readonly L[]) {
    return new Gauge<L>({ name, help, labelNames, registers: [this.registry] });
  }

  private histogram<L extends string>(
    name: string,
    help: string,
    buckets: number[],
    labelNames: readonly L[] = [],
  ) {
    return new Histogram<L>({ name, help, buckets, labelNames, registers: [this.registry] });
  }

  readonly steps = this.counter(
    'ckpt_training_steps_total',
    'Training steps run by this worker (rank 0 of multi-rank segments), replayed steps of a resumed segment included.',
    ['dir'],
  );
  readonly stepsPerSecond = this.gauge(
    'ckpt_training_steps_per_second',
    'Training speed of the running segment (0 once it has ended).',
    ['dir'],
  );
  readonly step = this.gauge('ckpt_training_step', 'Last step trained.', ['dir']);
  readonly loss = this.gauge('ckpt_training_loss', 'Training loss of the last step.', ['dir']);
  readonly trainingMetric = this.gauge(
    'ckpt_training_metric',
    "A command program's own training metric of the last step it reported (metric: its name).",
    ['dir', 'metric'],
  );
  readonly saveSeconds = this.histogram(
    'ckpt_checkpoint_save_seconds',
    'Checkpoint saves, from the snapshot to the commit (asynchronous saves overlap training).',
    IO_BUCKETS,
  );
  readonly saveBytes = this.counter(
    'ckpt_checkpoint_save_bytes_total',
    "Bytes of checkpoint files written by this worker (its rank's files).",
  );
  readonly loadSeconds = this.histogram(
    'ckpt_checkpoint_load_seconds',
    "Loads of the checkpoint a segment resumes from (weights, meta and this rank's optimizer state, verified).",
    IO_BUCKETS,
  );
  readonly loadBytes = this.counter(
    'ckpt_checkpoint_load_bytes_total',
    'Bytes of checkpoint files read to resume training.',
  );
  readonly segments = this.counter(
    'ckpt_segments_completed_total',
    'Training segments that reached their end step (rank 0 of multi-rank segments).',
  );
  readonly evaluations = this.counter('ckpt_evaluations_total', 'Checkpoints evaluated.');
  readonly evalMetric = this.gauge(
    'ckpt_eval_metric',
    'Last evaluation result of a checkpoint directory (metric: val_bpb, val_loss).',
    ['dir', 'metric'],
  );
  readonly activitySeconds = this.histogram(
    'ckpt_activity_seconds',
    'Activity executions by type and outcome (completed, failed, cancelled).',
    ACTIVITY_BUCKETS,
    ['activity_type', 'outcome'],
  );
  readonly failures = this.counter(
    'ckpt_activity_failures_total',
    'Activity attempts that failed (cancellations not included), by activity type.',
    ['activity_type'],
  );

  constructor(options: { processMetrics?: boolean } = {}) {
    // Node's own: CPU, resident memory, heap, event-loop lag, open handles.
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  record(event: ActivityEvent): void {
    const leader = event.type === 'evaluated' || (event.rank ?? 0) === 0;
    switch (event.type) {
      case 'progress':
        if (leader) this.steps.inc({ dir: event.dir });
        this.step.set({ dir: event.dir }, event.step);
        this.stepsPerSecond.set({ dir: event.dir }, event.stepsPerSec);
        if (event.loss !== null) this.loss.set({ dir: event.dir }, event.loss);
        if (leader) {
          for (const [metric, value] of Object.entries(event.metrics ?? {}))
            if (Number.isFinite(value)) this.trainingMetric.set({ dir: event.dir, metric }, value);
        }
        break;
      case 'saved':
        this.saveSeconds.observe(event.seconds);
        this.saveBytes.inc(event.bytes);
        break;
      case 'resumed':
        this.loadSeconds.observe(event.seconds);
        this.loadBytes.inc(event.bytes);
        break;
      case 'segment':
        if (leader) this.segments.inc();
        this.stepsPerSecond.set({ dir: event.dir }, 0);
        break;
      case 'evaluated':
        this.evaluations.inc();
        for (const [metric, value] of Object.entries(event.metrics)) {
          if (Number.isFinite(value)) this.evalMetric.set({ dir: event.dir, metric }, value);
        }
        break;
    }
  }

  /** Count the activities of this process from now on; returns the function that stops it. */
  observe(): () => void {
    return observeActivities((event) => this.record(event));
  }

  /** For WorkerOptions.interceptors.activity: times every activity and counts failures by type. */
  activityInterceptor(): ActivityInterceptorsFactory {
    return (ctx) => ({
      inbound: {
        execute: async (input, next) => {
          const type = ctx.info.activityType;
          const end = this.activitySeconds.startTimer({ activity_type: type });
          try {
            const result = await next(input);
            end({ outcome: 'completed' });
            return result;
          } catch (err) {
            const cancelled = ctx.cancellationSignal.aborted;
            end({ outcome: cancelled ? 'cancelled' : 'failed' });
            if (!cancelled) this.failures.inc({ activity_type: type });
            throw err;
          }
        },
      },
    });
  }
}

/**
 * Where metrics endpoints listen unless told otherwise: this host only. Metrics name directories, programs
 * and hosts; an operator who wants them scraped from elsewhere says so (--metrics-host, CKPT_METRICS_HOST).
 */
export const DEFAULT_METRICS_HOST = '127.0.0.1';

export interface MetricsServer {
  /** The address it listens on. */
  host: string;
  /** The port it listens on (the one asked for, or the one the system chose for 0). */
  port: number;
  close(): Promise<void>;
}

/** Serve `registry` in the Prometheus text format at GET /metrics on host:port (this host only by default). */
export async function serveMetrics(
  registry: Registry,
  port: number,
  host = DEFAULT_METRICS_HOST,
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(new Error(`metrics: cannot listen on ${host}:${port}: ${err.message}`)),
    );
    server.listen(port, host, () => resolve());
  });
  // Scrapes must not keep a worker that is shutting down alive.
  server.unref();
  const address = server.address() as AddressInfo;
  return {
    host: address.address,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
