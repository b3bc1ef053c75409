/**
 * `temporal-ckpt/plugin`: the pipeline as a Temporal Plugin for a user's own Worker (and Replayer).
 *
 *   import { trainingPlugin } from 'temporal-ckpt/plugin';
 *   await Worker.create({ connection, taskQueue: 'ckpt-train', plugins: [trainingPlugin({ role: 'train', programs: { mine } })] });
 *
 * One object registers what a role needs: the pipeline's workflows (control and all), its activities, the
 * metrics interceptor when asked for, and the training programs this worker runs by name. Built on
 * `@temporalio/plugin`'s SimplePlugin (marked experimental by the SDK).
 */
import { SimplePlugin } from '@temporalio/plugin';
import type { WorkerOptions } from '@temporalio/worker';
import { prewarmChild } from '../activities/child';
import { gpusFromEnv, gpuSlotsConfigured, trainingSlots } from '../activities/gpus';
import { configureAllowedRoots } from '../activities/allowed-roots';
import { registerPrograms, type ProgramRegistration } from '../activities/programs';
import type { DataConverter } from '@temporalio/common';
import { ENCODED_FAILURES_PATH, EncryptionCodec } from '../activities/payload-codec';
import { loadCodecKeys, type AllowedRoots, type CodecKeys } from '../temporal.config';
import type { WorkerMetrics } from './metrics';
import { HEARTBEAT_THROTTLE, workerParts, type WorkerRole } from './worker';

export interface TrainingPluginOptions {
  /**
   * What this worker hosts: 'train' (training and evaluation activities; register it on the pipeline's
   * train task queue), 'control' (the workflows and the light activities; the control queue), or 'all'
   * (both; give both queues one name). Default 'all'.
   *
   * With 'control' or 'all' the plugin sets the Worker's workflowsPath to the pipeline's workflows, unless
   * the Worker's options already name one: then that module is the worker's workflows, and it hosts the
   * pipeline too only if it re-exports it (`export * from 'temporal-ckpt/workflows'`). See
   * examples/own-workflow.
   */
  role?: WorkerRole;
  /**
   * Programs this worker runs by name (`ckpt pipeline start --program NAME`): a module path, or a program
   * object created with defineProgram() or loaded with loadProgram() (its module is then known, so the
   * training child can load it too).
   */
  /**
   * GPUs of this training worker (device ids): each running child sees one through CUDA_VISIBLE_DEVICES.
   * Default: CKPT_GPUS (`auto`: those nvidia-smi lists; `none`).
   */
  gpus?: string[];
  programs?: Record<string, ProgramRegistration>;
  /** Count this worker's activities into these Prometheus metrics (workers/metrics.ts). */
  metrics?: WorkerMetrics;
  /** Keep a warm standby training child, so segments skip the start-up (default true for train and all). */
  warmChild?: boolean;
  /**
   * What this worker's activities may touch (docs/security.md): `checkpoints`, the locations (folders,
   * s3://bucket/prefix) whose checkpoints they read and write; `programs`, the folders whose modules a
   * pipeline may name as its program by path. Each part left out comes from the environment
   * (CKPT_ALLOWED_ROOTS, default the store root; CKPT_ALLOWED_PROGRAM_ROOTS, default none).
   */
  allowedRoots?: Partial<AllowedRoots>;
  /**
   * Encrypt payloads (inputs, results, memos, heartbeat details) in the history with AES-256-GCM, on the
   * Worker, the Client and the Replayer the plugin is given to: keys by id, the first encrypts
   * (docs/security.md). Default: the keys of CKPT_CODEC_KEYS or CKPT_CODEC_KEY_FILE, if set; `false`:
   * none. Every client and worker of the namespace needs the same keys.
   */
  codecKeys?: CodecKeys | false;
}

/**
 * SimplePlugin has no option for the heartbeat throttle, which decides how soon a cancelled segment stops
 * (HEARTBEAT_THROTTLE): it is set here, unless the worker's own options set it.
 */
class TrainingPlugin extends SimplePlugin {
  override configureWorker(options: WorkerOptions): WorkerOptions {
    const configured = super.configureWorker(options);
    return {
      ...configured,
      maxHeartbeatThrottleInterval:
        configured.maxHeartbeatThrottleInterval ?? HEARTBEAT_THROTTLE.maxHeartbeatThrottleInterval,
      defaultHeartbeatThrottleInterval:
        configured.defaultHeartbeatThrottleInterval ?? HEARTBEAT_THROTTLE.defaultHeartbeatThrottleInterval,
    };
  }
}

export function trainingPlugin(options: TrainingPluginOptions = {}): SimplePlugin {
  const role = options.role ?? 'all';
  // Checked when the plugin is made: a worker that cannot run a program it names should not start.
  registerPrograms(options.programs ?? {});
  if (options.allowedRoots) configureAllowedRoots(options.allowedRoots);
  const parts = workerParts(role);
  const trains = role !== 'control';
  const keys = options.codecKeys === false ? undefined : (options.codecKeys ?? loadCodecKeys());
  return new TrainingPlugin({
    name: 'temporal-ckpt',
    ...(keys
      ? {
          // Added to the codecs the user's own options have (each runs in order on encode).
          dataConverter: (own?: DataConverter): DataConverter => ({
            ...own,
            payloadCodecs: [...(own?.payloadCodecs ?? []), new EncryptionCodec(keys)],
            failureConverterPath: own?.failureConverterPath ?? ENCODED_FAILURES_PATH,
          }),
        }
      : {}),
    activities: parts.activities,
    // A Worker has one workflowsPath. The user's own, when they give one, is kept: SimplePlugin would
    // otherwise replace it with ours, and their workflows would be missing from the worker without a word.
    ...(parts.workflowsPath ? { workflowsPath: (own?: string) => own ?? parts.workflowsPath! } : {}),
    ...(options.metrics ? { workerInterceptors: { activity: [options.metrics.activityInterceptor()] } } : {}),
    runContext: async (next) => {
      // GPU slots (CKPT_GPUS): the Worker's own maxConcurrentActivityTaskExecutions sets how many run at once.
      if (trains) trainingSlots(undefined, options.gpus ?? gpusFromEnv());
      if (trains && options.warmChild !== false && !gpuSlotsConfigured()) prewarmChild();
      await next();
    },
  });
}

export { workerParts, type WorkerRole };
