/** `ckpt pipeline start | status | pause | resume | stop` and `ckpt worker`, `ckpt dev-server`. */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { defaultPayloadConverter, type SearchAttributePair } from '@temporalio/common';
import {
  absoluteLocation,
  configureLogging,
  getLogger,
  InvalidArgumentError,
  joinLocation,
  type RetentionPolicy,
} from '../checkpoint';
import { startDevServer } from '../infra/temporal';
import { loadConfig, parseDuration, parsePort, sourceDir } from '../temporal.config';
import type { TrainingSpec } from '../activities/types';
import type { CommandRegistration, ProgramRegistration } from '../activities/programs';
import type { WorkerRole } from '../workers/worker';
import type { PipelineInput, PipelineState } from '../workflows/pipeline';
import {
  CkptDir,
  CkptState,
  CkptStep,
  CkptTag,
  SEARCH_ATTRIBUTES,
  type PipelineMemo,
} from '../workflows/visibility';
import {
  type Command,
  expectPositionals,
  flag,
  int,
  list,
  nameArg,
  NotFoundError,
  note,
  out,
  positional,
  step as stepArg,
  str,
  UsageError,
} from './args';
import { defaultTag, TRAIN_OPTIONS, trainSettings } from './train-commands';
import { commandProgramFromArgs, programReference } from './program-args';
import { loadProgramModule, PROGRAM_NAME } from '../program/load';
import { connectClient, uiLink, workflowSettings } from './temporal-client';
import { claimForPipeline, unclaim } from './claims';
import { ProgressLine } from './progress';

type Args = Parameters<Command['run']>[0];

export const RETENTION_OPTIONS = {
  'keep-last': { type: 'string' },
  'keep-best': { type: 'string' },
  metric: { type: 'string' },
  mode: { type: 'string' },
  'keep-every': { type: 'string' },
  pin: { type: 'string', multiple: true },
} as const;

/** Retention flags → policy, or undefined when none is given. */
export function retentionFromArgs(args: Args): RetentionPolicy | undefined {
  const policy: RetentionPolicy = {};
  const keepLast = int(args, 'keep-last', 0);
  if (keepLast !== undefined) policy.keepLast = keepLast;
  const k = int(args, 'keep-best', 1);
  if (k !== undefined) {
    // By default keep-best ranks by the program's primary metric (val_bpb, lower is better, for the GPT).
    if (str(args, 'metric') === undefined && args.remoteProgram !== undefined) {
      throw new UsageError('--keep-best needs --metric M (and --mode) for a program that is not known here', {
        field: 'metric',
      });
    }
    const metric = str(args, 'metric') ?? args.program?.metric.name ?? 'val_bpb';
    const mode =
      str(args, 'mode') ?? (metric === args.program?.metric.name ? args.program.metric.mode : 'min');
    if (mode !== 'min' && mode !== 'max')
      throw new UsageError(`--mode must be min or max, got "${mode}"`, { field: 'mode' });
    policy.keepBest = { k, metric, mode };
  }
  const every = int(args, 'keep-every', 1);
  if (every !== undefined) policy.keepEvery = every;
  const pins = list(args, 'pin').map((p) => stepArg({ values: { pin: p }, positionals: [] }, 'pin')!);
  if (pins.length > 0) policy.pinned = pins;
  return Object.keys(policy).length > 0 ? policy : undefined;
}

export function pipelineId(dir: string): string {
  const tag = dir.replace(/\/+$/, '').split('/').pop();
  return `ckpt-pipeline-${tag}-${createHash('sha256').update(dir).digest('hex').slice(0, 10)}`;
}

/** What the pipeline trains, from the flags: the program as a name or an absolute path. */
function toTraining(args: Args): TrainingSpec {
  const { run, config, configFlags } = trainSettings(args);
  // A file given relative to here must be found by workers elsewhere.
  for (const [key, flagName] of Object.entries(configFlags)) {
    if (args.program?.flags?.[flagName]?.path && typeof config[key] === 'string')
      config[key] = resolve(config[key]);
  }
  const exec = commandProgramFromArgs(args);
  if (exec) {
    // The primary metric of its evaluation: the one keep-best ranks by, when given.
    const metric = str(args, 'metric');
    const mode = str(args, 'mode') ?? 'min';
    if (metric !== undefined && (mode === 'min' || mode === 'max')) exec.metric = { name: metric, mode };
  }
  return {
    program: exec ? exec.name : programReference(str(args, 'program')),
    ...(exec ? { exec } : {}),
    config,
    run,
    ...(flag(args, 'noop') ? { noop: true } : {}),
  };
}

const {
  dir: _dir,
  resume: _resume,
  'resume-from-step': _rfs,
  'progress-json': _pj,
  'from-ipc': _ipc,
  ...PIPELINE_TRAIN_OPTIONS
} = TRAIN_OPTIONS;

const startCommand: Command = {
  name: 'pipeline start',
  takesProgram: 'or-worker-name',
  summary: 'Start a durable training pipeline (segments, evaluation, retention) on the Temporal server.',
  usage:
    'ckpt pipeline start --root ROOT [--source base] [--tag T] --steps N --segment-steps S --save-every K\n' +
    "                    [--program PATH|NAME] [--config JSON|FILE] [the program's flags, e.g. --depth D]\n" +
    '                    [--exec CMD [--eval-exec CMD] [--program NAME] [--kill-grace S]]   a command program\n' +
    '                    [--seed X] [--eval] [--keep-last N] [--keep-best K --metric M --mode min|max] [--keep-every S]\n' +
    '                    [--pin STEP]... [--id ID] [--segments-per-run R] [--wait] [every flag of ckpt train]\n' +
    '                    [--world-size W [--min-world-size M] [--shrink-after D]] [--noop]',
  options: {
    ...PIPELINE_TRAIN_OPTIONS,
    ...RETENTION_OPTIONS,
    'segment-steps': { type: 'string' },
    eval: { type: 'boolean' },
    id: { type: 'string' },
    wait: { type: 'boolean' },
    'segments-per-run': { type: 'string' },
    'world-size': { type: 'string' },
    'min-world-size': { type: 'string' },
    'shrink-after': { type: 'string' },
    noop: { type: 'boolean' },
  },
  async run(args) {
    expectPositionals(args, 0, 'pipeline start');
    const config = loadConfig();
    const steps = int(args, 'steps', 1);
    if (steps === undefined)
      throw new UsageError('pipeline start: --steps N is required', { field: 'steps' });
    const root = absoluteLocation(str(args, 'root') ?? config.storeRoot, 'root');
    const source = nameArg(args, 'source') ?? 'base';
    const tag = nameArg(args, 'tag') ?? defaultTag(args, 'pipeline start');
    const dir = joinLocation(root, sourceDir(config, source), tag);
    const segmentSteps = int(args, 'segment-steps', 1) ?? steps;
    const saveEvery = int(args, 'save-every', 1) ?? segmentSteps;
    const input: PipelineInput = {
      dir,
      targetSteps: steps,
      segmentSteps,
      saveEvery,
      training: toTraining(args),
      evaluate: flag(args, 'eval'),
      retention: retentionFromArgs(args),
      segmentsPerRun: int(args, 'segments-per-run', 1),
      worldSize: int(args, 'world-size', 1),
      minWorldSize: int(args, 'min-world-size', 1),
      shrinkAfterMs:
        str(args, 'shrink-after') !== undefined
          ? parseDuration(str(args, 'shrink-after')!, '--shrink-after')
          : undefined,
      settings: workflowSettings(config.temporal),
    };
    if (input.training?.noop && (input.worldSize ?? 1) > 1) {
      throw new UsageError('pipeline start: --noop runs single-rank segments only; drop --world-size', {
        field: 'noop',
      });
    }
    input.metric = input.retention?.keepBest
      ? { name: input.retention.keepBest.metric, mode: input.retention.keepBest.mode }
      : args.program?.metric;
    const id = str(args, 'id') ?? pipelineId(dir);
    const client = await connectClient(config.temporal);
    const usable = await registeredSearchAttributes(client, config.temporal.namespace);
    input.searchAttributes = [...usable];
    // One pipeline per directory, whatever its id: claimed in the store before the workflow starts.
    await claimForPipeline(client, config.temporal, dir, id, flag(args, 'take-over'));
    const initial = [
      { key: CkptTag, value: tag },
      { key: CkptDir, value: dir },
      { key: CkptStep, value: 0 },
      { key: CkptState, value: 'starting' },
    ].filter((pair) => usable.has(pair.key.name));
    try {
      await client.workflow.start('trainingPipeline', {
        taskQueue: config.temporal.taskQueues.control,
        workflowId: id,
        args: [input],
        workflowIdConflictPolicy: 'FAIL',
        memo: { dir, tag, targetSteps: steps },
        // What the Web UI shows for the run at a glance (the memo and search attributes hold the facts).
        staticSummary: `train ${dir} to step ${steps}`,
        staticDetails: [
          `segments of ${segmentSteps} steps, a checkpoint every ${saveEvery} steps`,
          `world size ${input.worldSize ?? 1}`,
          input.evaluate ? 'evaluates every new checkpoint' : 'no evaluation',
          input.retention ? `retention ${JSON.stringify(input.retention)}` : 'no retention',
        ].join('\n'),
        ...(initial.length > 0 ? { typedSearchAttributes: initial as SearchAttributePair[] } : {}),
      });
    } catch (err) {
      // The same id already running holds its claim; any other failure gives the claim back.
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) await unclaim(dir, id);
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        throw new InvalidArgumentError(
          `a pipeline is already running on ${dir} (workflow id ${id}); see: ckpt pipeline status ${id}`,
          { field: 'id' },
        );
      }
      throw err;
    }
    note(`started pipeline ${id} on ${dir}`);
    note(`Web UI: ${uiLink(config.temporal, id)}`);
    out(id);
    if (!flag(args, 'wait')) return 0;
    return waitFor(client, id);
  },
};

/** Wire values of temporal.api.enums.v1.IndexedValueType (what listSearchAttributes answers). */
const INDEXED_VALUE_TYPES: Record<string, number> = { KEYWORD: 2, INT: 3, DOUBLE: 4 };

/**
 * The pipeline search attributes (SEARCH_ATTRIBUTES) that `namespace` has registered with the right type.
 * One question to the server; when some are missing (a production cluster where nobody registered them)
 * the pipeline (or what `starts` says) runs without them and one note says how to register them.
 */
export async function registeredSearchAttributes(
  client: Client,
  namespace: string,
  starts = 'the pipeline runs',
): Promise<Set<string>> {
  let registered: Record<string, unknown>;
  try {
    const response = await client.connection.operatorService.listSearchAttributes({ namespace });
    registered = { ...(response.customAttributes ?? {}) };
  } catch (err) {
    note(`search attributes: could not list them (${(err as Error).message}); starting without them`);
    return new Set();
  }
  const usable = new Set<string>();
  const missing: string[] = [];
  for (const { key, cliType } of SEARCH_ATTRIBUTES) {
    const type = registered[key.name];
    if (type === INDEXED_VALUE_TYPES[key.type] || type === `INDEXED_VALUE_TYPE_${key.type}`)
      usable.add(key.name);
    else missing.push(`--name ${key.name} --type ${cliType}`);
  }
  if (missing.length > 0) {
    note(
      `search attributes ${SEARCH_ATTRIBUTES.filter((a) => !usable.has(a.key.name))
        .map((a) => a.key.name)
        .join(', ')} are not registered in namespace ${namespace}; ${starts} without them. ` +
        `To filter pipelines in the Web UI, register them once: ` +
        missing
          .map((m) => `temporal operator search-attribute create --namespace ${namespace} ${m}`)
          .join('; '),
    );
  }
  return usable;
}

async function waitFor(client: Client, id: string): Promise<number> {
  const bar = new ProgressLine();
  let lastStep = -1;
  for (;;) {
    const status = await pipelineStatus(client, id);
    if (status.step !== lastStep || status.state !== 'running') {
      bar.update(
        `${status.state}  step ${status.step}/${status.targetSteps ?? '?'}  loss ${status.loss ?? '-'}  segment ${status.segment ?? '-'}`,
        true,
      );
      lastStep = status.step;
    }
    if (status.state === 'completed') {
      bar.done();
      return 0;
    }
    if (['failed', 'stopped', 'terminated', 'cancelled', 'timed_out'].includes(status.state)) {
      bar.done();
      note(`pipeline ${id} ended: ${status.state}${status.error ? ` (${status.error})` : ''}`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export interface PipelineStatus extends Omit<Partial<PipelineState>, 'state' | 'step'> {
  id: string;
  state: string;
  step: number;
  /**
   * Where `step` came from: the running segment's heartbeat, the workflow's query, its result, or (when
   * no worker answers the query, or the run failed) the memo the workflow keeps.
   */
  stepSource: 'heartbeat' | 'query' | 'result' | 'memo' | 'unknown';
  workflowStatus: string;
  /** The run's memo: dir, tag, targetSteps from the start; step, bestMetric, state kept by the workflow. */
  memo?: Partial<PipelineMemo> & Record<string, unknown>;
  error?: string;
}

/**
 * The pipeline's status: the workflow's query merged with the live step from the running segment's
 * heartbeat (which the workflow cannot see), falling back to describe() when no worker answers the query.
 */
export async function pipelineStatus(client: Client, id: string): Promise<PipelineStatus> {
  const handle = client.workflow.getHandle(id);
  const description = await handle.describe();
  const workflowStatus = description.status.name;
  let heartbeatStep: number | null = null;
  for (const activity of description.raw.pendingActivities ?? []) {
    const payload = activity.heartbeatDetails?.payloads?.[0];
    if (!payload) continue;
    const details = defaultPayloadConverter.fromPayload(payload as never) as { step?: number };
    if (typeof details?.step === 'number' && details.step >= 0) heartbeatStep = details.step;
  }
  let state: PipelineState | null = null;
  let error: string | undefined;
  if (workflowStatus === 'COMPLETED') {
    state = (await handle.result()) as PipelineState;
  } else if (workflowStatus === 'RUNNING' || workflowStatus === 'CANCELLED') {
    // A cancelled run recorded its last checkpoint and state before it ended: a query replays it.
    try {
      state = await Promise.race([
        handle.query<PipelineState>('status'),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('query timed out')), 5000)),
      ]);
    } catch {
      state = null;
    }
  } else if (workflowStatus === 'FAILED') {
    error = await handle.result().then(
      () => undefined,
      (err: Error) => (err.cause as Error | undefined)?.message ?? err.message,
    );
  }
  const memo = description.memo as PipelineStatus['memo'];
  const memoStep = typeof memo?.step === 'number' ? memo.step : null;
  const known = state?.step ?? memoStep ?? 0;
  const step = heartbeatStep !== null ? Math.max(heartbeatStep, known) : known;
  const source = state
    ? workflowStatus === 'COMPLETED'
      ? 'result'
      : 'query'
    : memoStep !== null
      ? 'memo'
      : 'unknown';
  return {
    ...(state ?? {}),
    id,
    workflowStatus,
    state:
      workflowStatus === 'RUNNING'
        ? (state?.state ?? 'running')
        : workflowStatus === 'COMPLETED'
          ? (state?.state ?? 'completed')
          : workflowStatus.toLowerCase(),
    step,
    stepSource: heartbeatStep !== null && heartbeatStep >= known ? 'heartbeat' : source,
    ...(memo ? { memo } : {}),
    ...(error ? { error } : {}),
  };
}

function withClient(
  name: string,
  summary: string,
  run: (client: Client, id: string, args: Args) => Promise<number>,
): Command {
  return {
    name: `pipeline ${name}`,
    summary,
    usage: `ckpt pipeline ${name} ID${name === 'status' ? ' [--json]' : ''}`,
    options: name === 'status' ? { json: { type: 'boolean' } } : {},
    async run(args) {
      expectPositionals(args, 1, `pipeline ${name}`);
      const id = positional(args, 0, 'ID', `pipeline ${name}`);
      const client = await connectClient(loadConfig().temporal);
      try {
        return await run(client, id, args);
      } catch (err) {
        if (err instanceof WorkflowNotFoundError)
          throw new NotFoundError(`no pipeline with workflow id ${id}`, { field: 'ID' });
        throw err;
      }
    },
  };
}

const statusCommand = withClient(
  'status',
  'Show a pipeline: state, step (live), loss, last checkpoint, best metric.',
  async (client, id, args) => {
    const status = await pipelineStatus(client, id);
    if (flag(args, 'json')) {
      out(JSON.stringify(status, null, 2));
      return 0;
    }
    const best = status.bestMetric
      ? `${status.bestMetric.value.toFixed(4)} at step ${status.bestMetric.step}`
      : '-';
    out(
      [
        `pipeline        ${id}`,
        `state           ${status.state}`,
        `step            ${status.step} / ${status.targetSteps ?? '?'}  (${status.stepSource})`,
        `loss            ${status.loss ?? '-'}`,
        `last checkpoint ${status.lastCheckpoint ?? '-'}`,
        `best metric     ${best}`,
        `segment         ${status.segment ?? '-'}`,
        `ranks           ${status.group ? `${status.group.worldSize}${status.group.changes.map((c) => ` (was ${c.from} until step ${c.step}: ${c.reason})`).join('')}` : 1}`,
        ...(status.memo ? [`memo            ${JSON.stringify(status.memo)}`] : []),
        `Web UI          ${uiLink(loadConfig().temporal, id)}`,
        ...(status.error ? [`error           ${status.error}`] : []),
      ].join('\n'),
    );
    return 0;
  },
);

const signalCommand = (name: 'pause' | 'resume' | 'stop', summary: string) =>
  withClient(name, summary, async (client, id) => {
    await client.workflow.getHandle(id).signal(name);
    note(`${name} sent to ${id}`);
    return 0;
  });

/**
 * `ckpt worker --program` entries: NAME=PATH (a module, loaded now: a worker that cannot load a program it
 * is told to run should not start), NAME=exec:CMD and NAME=eval-exec:CMD (a command program's training and
 * evaluation commands, run in the worker's directory).
 */
export async function workerPrograms(entries: string[]): Promise<Record<string, ProgramRegistration>> {
  const programs: Record<string, ProgramRegistration> = {};
  for (const entry of entries) {
    const [name, path] = [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)];
    if (!entry.includes('=') || !PROGRAM_NAME.test(name) || path === '') {
      throw new UsageError(
        `--program must be NAME=PATH, NAME=exec:CMD or NAME=eval-exec:CMD, got "${entry}"`,
        {
          field: 'program',
        },
      );
    }
    // A command program: its training command (exec:) and evaluation command (eval-exec:), run here.
    const command = /^(exec|eval-exec):(.*)$/s.exec(path);
    if (command) {
      const given = programs[name];
      const registration: CommandRegistration =
        typeof given === 'object' && 'exec' in given ? given : { exec: '' };
      if (command[1] === 'exec') registration.exec = command[2]!;
      else registration.evalExec = command[2]!;
      programs[name] = registration;
      continue;
    }
    // Load it now: a worker that cannot load a program it is told to run should not start.
    await loadProgramModule(path);
    programs[name] = resolve(path);
  }
  for (const [name, p] of Object.entries(programs)) {
    if (typeof p === 'object' && 'exec' in p && p.exec === '')
      throw new UsageError(`--program ${name}=eval-exec:… needs ${name}=exec:CMD too`, {
        field: 'program',
      });
  }
  return programs;
}

const workerCommand: Command = {
  name: 'worker',
  summary: 'Run a worker: train (training/eval activities), control (workflows, light activities) or all.',
  usage:
    'ckpt worker [--role train|control|all] [--task-queue Q] [--slots N] [--program NAME=PATH|exec:CMD|eval-exec:CMD]...\n' +
    '            [--metrics-port P] [--sdk-metrics-port P2] [--metrics-host ADDR]\n\n' +
    '--program registers a training program by name: pipelines started with --program NAME run it here.\n' +
    'N: concurrent segments/ranks (GPUs). --metrics-port serves Prometheus metrics at GET /metrics (CKPT_METRICS_PORT);\n' +
    "--sdk-metrics-port exports the Temporal SDK's own metrics (CKPT_SDK_METRICS_PORT). Both listen on 127.0.0.1\n" +
    'unless --metrics-host says otherwise (CKPT_METRICS_HOST; 0.0.0.0: every interface). Logs go to stderr: text\n' +
    'lines on a terminal, JSON lines otherwise (CKPT_LOG_FORMAT=text|json decides).',
  options: {
    role: { type: 'string' },
    'task-queue': { type: 'string' },
    slots: { type: 'string' },
    'metrics-port': { type: 'string' },
    'sdk-metrics-port': { type: 'string' },
    'metrics-host': { type: 'string' },
    program: { type: 'string', multiple: true },
  },
  async run(args) {
    expectPositionals(args, 0, 'worker');
    const programs = await workerPrograms(list(args, 'program'));
    const role = (str(args, 'role') ?? 'all') as WorkerRole;
    if (!['train', 'control', 'all'].includes(role))
      throw new UsageError(`--role must be train, control or all, got "${role}"`);
    const taskQueue = str(args, 'task-queue');
    if (taskQueue && role === 'all')
      throw new UsageError('--task-queue needs --role train or --role control');
    const config = loadConfig();
    const slots = int(args, 'slots', 1);
    if (slots !== undefined) config.temporal.trainSlots = slots;
    const portArg = (name: string) =>
      str(args, name) !== undefined ? parsePort(str(args, name)!, `--${name}`) : undefined;
    const metricsPort = portArg('metrics-port') ?? config.metricsPort;
    const sdkMetricsPort = portArg('sdk-metrics-port') ?? config.sdkMetricsPort;
    const metricsHost = str(args, 'metrics-host') ?? config.metricsHost;
    // One format on stderr for our lines, the SDK's and the activities': text for a person at a terminal,
    // JSON lines for a log pipeline; CKPT_LOG_FORMAT decides when it is set.
    const format = config.logFormatExplicit ? config.logFormat : process.stderr.isTTY ? 'text' : 'json';
    configureLogging({ level: config.logLevel, allRanks: config.logAllRanks, format, textFields: true });
    const logger = getLogger();
    // Loaded here, not at the top: the worker, its activities and the SDK's worker runtime take about 0.4 s
    // to load, which every other command of this module (`pipeline start` first) would pay for nothing.
    const { installWorkerRuntime } = require('../workers/runtime') as typeof import('../workers/runtime');
    const { runWorkers } = require('../workers/worker') as typeof import('../workers/worker');
    installWorkerRuntime({ logger, level: config.logLevel, sdkMetricsPort, metricsHost });
    const address = config.temporal.connect.connectionOptions.address;
    logger.info(
      { role, address, namespace: config.temporal.namespace, metricsPort, sdkMetricsPort, metricsHost },
      `worker (${role}) connecting to ${address}, namespace ${config.temporal.namespace}`,
    );
    await runWorkers({
      role,
      settings: config.temporal,
      taskQueue,
      metricsPort,
      metricsHost,
      programs,
    });
    return 0;
  },
};

const devServerCommand: Command = {
  name: 'dev-server',
  summary: 'Run a local Temporal dev server in the foreground (installs the Temporal CLI if missing).',
  usage: 'ckpt dev-server [--port P] [--ui-port U] [--db FILE]',
  options: { port: { type: 'string' }, 'ui-port': { type: 'string' }, db: { type: 'string' } },
  async run(args) {
    expectPositionals(args, 0, 'dev-server');
    const server = await startDevServer({
      port: int(args, 'port', 1) ?? 7233,
      uiPort: int(args, 'ui-port', 1) ?? 8233,
      db: str(args, 'db'),
      stdio: 'inherit',
    });
    note(`Temporal dev server on ${server.address}; Web UI ${server.uiAddress}; Ctrl-C stops it`);
    await new Promise<void>((resolveStop) => {
      const stop = () => void server.stop().then(resolveStop);
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      server.process.once('exit', () => resolveStop());
    });
    return 0;
  },
};

export const pipelineCommands: Command[] = [
  startCommand,
  statusCommand,
  signalCommand('pause', 'Pause a pipeline after its current segment.'),
  signalCommand('resume', 'Resume a paused pipeline.'),
  signalCommand('stop', 'Stop a pipeline: cancels the running segment; the last checkpoint stays committed.'),
  workerCommand,
  devServerCommand,
];
