/** `ckpt train | eval | sample`: training with exact resume, evaluation and generation from checkpoints. */
import { findLastStep, joinLocation, loadCheckpoint } from '../checkpoint';
import type { TrainingProgram } from '../program/contract';
import { configureProgram } from '../program/meta';
import { runSettingOptions, runSettingsFromFlags, runSettingsHelp, scheduleOf } from '../train/settings';
import type { Progress, WarmRun } from '../train/trainer';
import { loadConfig, sourceDir } from '../temporal.config';
import {
  type Command,
  expectPositionals,
  flag,
  int,
  nameArg,
  note,
  num,
  out,
  positional,
  step as stepArg,
  str,
  tagOfDir,
  UsageError,
} from './args';
import { ProgressLine } from './progress';
import { launchRanks } from './launcher';
import { initProcessGroup, optionsFromEnv } from '../train/dist';
import {
  COMMAND_OPTIONS,
  commandProgramFromArgs,
  parseConfigFlag,
  PROGRAM_OPTIONS,
  programConfigFromArgs,
} from './program-args';
import { loadProgram } from '../program/load';
import type { TrainEvent } from '../train/events';
import {
  checkRequest,
  receiveTrainRequest,
  STICKY_IDLE,
  STICKY_NEXT,
  WRITER_CONFIRMED,
  type TrainRequest,
} from '../train/request';
import { acquireWriter, defaultHolder, type WriterLease } from '../checkpoint/writer';
import { commandEvalProgram, runCommandSegment } from '../train/command-runner';
import { checkCommandProgram, commandProgram } from '../program/command';
import { recordedProgram } from '../program/meta';
import { refuseIfClaimed } from './claims';

/** Where a run's checkpoints go and what the loop does; the program's own flags come on top. */
export const TRAIN_OPTIONS = {
  root: { type: 'string' },
  dir: { type: 'string' },
  source: { type: 'string' },
  tag: { type: 'string' },
  steps: { type: 'string' },
  'save-every': { type: 'string' },
  resume: { type: 'boolean' },
  'resume-from-step': { type: 'string' },
  ...runSettingOptions(),
  ...PROGRAM_OPTIONS,
  ...COMMAND_OPTIONS,
  // For the pipeline's training activity: progress as JSON lines on stdout instead of a progress bar.
  'progress-json': { type: 'boolean' },
  // For a worker's training child: the run comes as one TrainRequest message over the IPC channel.
  'from-ipc': { type: 'boolean' },
  nproc: { type: 'string' },
  reshard: { type: 'boolean' },
  'take-over': { type: 'boolean' },
} as const;

type Args = Parameters<Command['run']>[0];

/**
 * The training loop, the evaluation and the sampler load the model backend (tfjs), about 0.25 s: they are
 * required when a command runs them, so that `pipeline start` and the other commands that only read this
 * module's flags and settings start without it.
 */
const trainer = () => require('../train/trainer') as typeof import('../train/trainer');

function programOf(args: Args): TrainingProgram<unknown> {
  if (!args.program) throw new Error('internal: a command that takes --program ran without one');
  return args.program;
}

/**
 * The settings a run's flags give: the program's config keys and the loop's settings. Without a program
 * (`pipeline start` naming one only the workers have), `--config` alone gives the config.
 */
export function trainSettings(args: Args) {
  const run = runSettingsFromFlags(args.values);
  if (!args.program)
    return { program: undefined, run, config: parseConfigFlag(str(args, 'config')), configFlags: {} };
  const { config, configFlags } = programConfigFromArgs(args.program, args);
  return { program: args.program, run, config, configFlags };
}

/** ROOT/<source_dir>/<tag>; the tag defaults to the program's (d<depth> for the GPT). */
export function checkpointDir(
  args: Args,
  command: string,
): { root: string; source: string; tag: string; dir: string } {
  const config = loadConfig();
  const explicit = str(args, 'dir');
  if (explicit !== undefined) {
    // The checkpoint directory itself (ROOT/<source_dir>/<tag>), as the pipeline's activities pass it.
    const tag = tagOfDir(explicit);
    return { root: explicit, source: '', tag, dir: explicit };
  }
  const root = str(args, 'root') ?? config.storeRoot;
  const source = nameArg(args, 'source') ?? 'base';
  const tag = nameArg(args, 'tag') ?? defaultTag(args, command);
  return { root, source, tag, dir: joinLocation(root, sourceDir(config, source), tag) };
}

/** The program's default tag for the config the flags give (d<depth> for the GPT). */
export function defaultTag(args: Args, command: string): string {
  if (!args.program)
    throw new UsageError(`${command}: give --tag T (the program is not known here)`, { field: 'tag' });
  const program = programOf(args);
  const { config } = programConfigFromArgs(program, args);
  if (!program.defaultTag || (program.name === 'gpt' && config.n_layer === undefined)) {
    const hint =
      program.name === 'gpt' ? 'give --depth D (the tag defaults to d<D>) or --tag T' : 'give --tag T';
    throw new UsageError(`${command}: ${hint}`, { field: 'tag' });
  }
  return nameArg(
    { values: { tag: program.defaultTag(configureProgram(program, config)) }, positionals: [] },
    'tag',
  )!;
}

const trainCommand: Command = {
  name: 'train',
  summary:
    'Train a program (the GPT by default), saving verified checkpoints; resume exactly where a run stopped.',
  usage:
    'ckpt train --root ROOT [--source base] [--tag T] --steps N [--save-every K] [--program PATH|NAME] [--config JSON|FILE]\n' +
    '           [--dir ROOT/<source_dir>/<tag> instead of --root/--source/--tag]\n' +
    "           [--resume | --resume-from-step N] [--nproc W] [--reshard] [the loop's flags] [the program's flags]\n\n" +
    "The loop's flags:\n" +
    runSettingsHelp() +
    '\n\n--steps is the absolute target step. The learning-rate schedule has its own horizon, so a run to 20\n' +
    'resumed to 30 equals a run to 30. On resume, flags that are not given come from the checkpoint.\n' +
    '--nproc W starts W rank processes (data parallel); --batch is the global batch.\n' +
    'Resuming a checkpoint saved with another world size needs --reshard.\n' +
    '--exec CMD runs a command program in any language instead (docs/programs.md): --program then names it,\n' +
    '--config is its config (CKPT_CONFIG), --kill-grace S its SIGTERM to SIGKILL grace (default 10).\n' +
    "--program names the model-specific part (default: gpt); --config sets the program's config keys, and\n" +
    "the program's own flags are listed below.",
  options: TRAIN_OPTIONS,
  takesProgram: true,
  async run(args) {
    expectPositionals(args, 0, 'train');
    // A worker's training child gets its run as one typed message instead of flags.
    if (flag(args, 'from-ipc')) return trainFromIpc(args);
    const steps = int(args, 'steps', 1);
    if (steps === undefined) throw new UsageError('train: --steps N is required', { field: 'steps' });
    const from = stepArg(args, 'resume-from-step');
    if (from !== undefined && flag(args, 'resume'))
      throw new UsageError('train: give --resume or --resume-from-step, not both');
    // Bad names are refused here, before any rank process starts.
    const { dir, tag } = checkpointDir(args, 'train');
    const nproc = int(args, 'nproc', 1) ?? 1;
    if (nproc > 1 && process.env.RANK === undefined) {
      const argv = process.argv.slice(2);
      const i = argv.findIndex((a) => a === '--nproc' || a.startsWith('--nproc='));
      argv.splice(i, argv[i]!.includes('=') ? 1 : 2);
      return launchRanks(argv, nproc);
    }
    const { run, config, configFlags } = trainSettings(args);
    const exec = commandProgramFromArgs(args);
    const program = exec ? undefined : programOf(args);
    const request: TrainRequest = {
      dir,
      steps,
      saveEvery: int(args, 'save-every', 1) ?? Math.max(1, Math.min(steps, 100)),
      resume: from !== undefined ? { step: from } : flag(args, 'resume') ? 'last' : 'none',
      reshard: flag(args, 'reshard'),
      ...(flag(args, 'take-over') ? { writer: { claim: null, takeOver: 'always', gated: false } } : {}),
      program: exec?.name ?? str(args, 'program') ?? program!.name,
      config,
      configFlags,
      run,
      ...(exec ? { exec } : {}),
    };
    return runTraining(request, program, tag, args);
  },
};

/**
 * The writer lease for a run: a pipeline's segment may take over its own pipeline's earlier attempt at
 * once (same claim), and renews only while its worker confirms the attempt with the Temporal server; a
 * plain `ckpt train` takes a free directory, or any with --take-over.
 */
async function takeWriter(request: TrainRequest, dir: string): Promise<WriterLease> {
  const claim = request.writer?.claim ?? null;
  const takeOver = request.writer?.takeOver === 'always';
  await refuseIfClaimed(dir, { claim, takeOver, settings: loadConfig().temporal });
  return acquireWriter(dir, {
    holder: `${defaultHolder()}${claim ? ` for pipeline ${claim}` : ' (ckpt train)'}`,
    claim,
    takeOver: request.writer?.takeOver ?? 'never',
    gated: request.writer?.gated ?? false,
  });
}

/** What makes two requests the same run, as far as the state kept in memory goes. */
const runKey = (r: TrainRequest) =>
  JSON.stringify([r.dir, r.program, r.config, r.configFlags ?? {}, r.run, r.exec ?? null]);

/**
 * A worker's training child: one request, or with `sticky` one run's segments one after another, the
 * state kept in memory between them (activities/sticky.ts). No lease is held between segments: each
 * takes it again, and uses the kept state only if it is still the directory's last commit.
 */
async function trainFromIpc(args: Args): Promise<number> {
  let request = await receiveTrainRequest();
  let program: { spec: string; loaded: TrainingProgram<unknown> } | undefined;
  const memory: { warm?: WarmRun } = {};
  for (;;) {
    if (!request.exec && program?.spec !== request.program)
      program = { spec: request.program, loaded: await loadProgram(request.program) };
    // train() either uses the kept state or disposes of it; only what it keeps again is kept.
    const kept = memory.warm;
    memory.warm = undefined;
    await runTraining(request, request.exec ? undefined : program?.loaded, tagOfDir(request.dir), args, {
      warm: kept,
      keep: request.sticky && !request.exec ? (run) => (memory.warm = run) : undefined,
    });
    if (!request.sticky || !process.send || request.exec) return 0;
    const key = runKey(request);
    // Set (or not) by train() through `keep`, which the compiler cannot see.
    const keptNow = memory.warm as WarmRun | undefined;
    const next = await nextStickyRequest(keptNow?.step ?? null);
    if (next === null || runKey(next) !== key) {
      if (keptNow) trainer().disposeWarm(keptNow);
      memory.warm = undefined;
      if (next === null) return 0;
    }
    request = next;
  }
}

/** Tell the worker this child is idle with its state kept, and wait for the next request (null: end). */
function nextStickyRequest(step: number | null): Promise<TrainRequest | null> {
  return new Promise((resolve, reject) => {
    // While idle, the channel is what keeps this process alive.
    process.channel?.ref();
    const onMessage = (msg: unknown) => {
      const m = msg as { type?: string; request?: unknown } | null;
      if (m?.type !== STICKY_NEXT) return;
      process.off('message', onMessage);
      process.channel?.unref();
      if (m.request === undefined) return resolve(null);
      try {
        resolve(checkRequest(m.request));
      } catch (err) {
        reject(err);
      }
    };
    process.on('message', onMessage);
    process.send!({ type: STICKY_IDLE, step });
  });
}

/** Train as the request says; progress as a bar on a terminal, or as TrainEvent lines (--progress-json). */
async function runTraining(
  request: TrainRequest,
  program: TrainingProgram<unknown> | undefined,
  tag: string,
  args: Args,
  memory: { warm?: WarmRun; keep?: (run: WarmRun) => void } = {},
): Promise<number> {
  const { dir, steps, run } = request;
  const groupOptions = optionsFromEnv();
  // A command program runs its own collectives (MASTER_ADDR/MASTER_PORT are its).
  const group =
    groupOptions.worldSize > 1 && !request.exec ? await initProcessGroup(groupOptions) : undefined;
  const json = flag(args, 'progress-json');
  const emit = (event: TrainEvent) => process.stdout.write(JSON.stringify(event) + '\n');
  const bar = new ProgressLine();
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // Started by a worker: if the worker dies, stop at once rather than train on as an orphan (a commit in
  // flight is atomic, so exiting mid-save leaves nothing half-done).
  if (process.send) {
    if (process.listenerCount('disconnect') === 0) process.once('disconnect', () => process.exit(137));
    // The channel only watches the parent; it must not keep this process alive once training is done.
    process.channel?.unref();
  }
  let summary;
  let writer: WriterLease | undefined;
  const confirmations = (msg: unknown) => {
    const m = msg as { type?: string; at?: number } | null;
    if (m?.type === WRITER_CONFIRMED && typeof m.at === 'number') writer?.confirm(m.at);
  };
  try {
    // Rank 0 takes the directory's writer lease (checkpoint/writer.ts) once the group stands, so that a
    // refusal reaches the other ranks at once.
    if (groupOptions.rank === 0) writer = await takeWriter(request, dir);
    if (writer && request.writer?.gated && process.send) {
      process.on('message', confirmations);
      process.channel?.unref();
    }
    writer?.startRenewing();
    summary = request.exec
      ? await runCommandSegment({
          dir,
          program: request.exec,
          steps,
          saveEvery: request.saveEvery,
          seed: run.seed ?? 0,
          config: request.config,
          resume: request.resume,
          rank: groupOptions.rank,
          worldSize: groupOptions.worldSize,
          localRank: Number(process.env.LOCAL_RANK ?? 0),
          ...(groupOptions.worldSize > 1
            ? { master: { addr: groupOptions.masterAddr, port: groupOptions.masterPort } }
            : {}),
          writer,
          signal: controller.signal,
          onEvent: (event) =>
            json
              ? emit(event)
              : event.type === 'progress'
                ? bar.update(`step ${event.step}/${steps}  loss ${event.loss.toFixed(4)}`)
                : event.type === 'saved'
                  ? bar.log(`saved step ${event.step} to ${dir}`)
                  : undefined,
          onOutput: (line) => bar.log(`[${request.exec!.name}] ${line}`),
        })
      : await trainer().train({
          dir,
          steps,
          saveEvery: request.saveEvery,
          program: program!,
          config: request.config,
          configFlags: request.configFlags,
          seed: run.seed,
          batch: run.batch,
          schedule: scheduleOf(run),
          saveDtype: run.saveDtype?.toUpperCase() as 'F32' | 'BF16' | 'F16' | undefined,
          resume: request.resume,
          backend: loadConfig().backend,
          storeConfig: loadConfig().s3,
          group,
          reshard: request.reshard,
          writer,
          warm: memory.warm,
          keepWarm: memory.keep,
          signal: controller.signal,
          onProgress: (p: Progress) =>
            json
              ? emit({ type: 'progress', step: p.step, loss: p.loss, lr: p.lr, stepsPerSec: p.stepsPerSec })
              : bar.update(
                  `step ${p.step}/${p.steps}  loss ${p.loss.toFixed(4)}  (smoothed ${p.smoothedLoss.toFixed(4)})  ${p.stepsPerSec.toFixed(1)} steps/s`,
                  p.step === p.steps || p.step % 10 === 0,
                ),
          onSave: (s, io) =>
            json
              ? emit({ type: 'saved', step: s, seconds: io.seconds, bytes: io.bytes })
              : bar.log(`saved step ${s} to ${dir}`),
          onResume: (s, io) => {
            if (json) emit({ type: 'resumed', step: s, seconds: io.seconds, bytes: io.bytes });
          },
        });
  } finally {
    process.off('message', confirmations);
    // The signal handlers stay until the lease is released: a SIGTERM from the launcher (another rank failed
    // at the same moment) must not kill this rank between its refusal and the release.
    await writer?.release();
    // Open sockets would keep this rank alive after an error.
    await group?.close();
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
  bar.done();
  if (json) emit({ type: 'done', ...summary });
  note(
    summary.endStep === summary.startStep
      ? `nothing to do: ${tag} is already at step ${summary.startStep}`
      : `trained ${tag} from step ${summary.startStep} to ${summary.endStep} in ${summary.seconds.toFixed(1)} s on ${summary.backend}` +
          (summary.program !== 'gpt' ? ` with program ${summary.program}` : '') +
          (summary.finalLoss !== null ? `, final loss ${summary.finalLoss.toFixed(4)}` : ''),
  );
  return 0;
}

/** `--program` when given; otherwise the checkpoint's meta names the (built-in) program. */
async function optionalProgram(args: Args): Promise<TrainingProgram<unknown> | undefined> {
  const spec = str(args, 'program');
  return spec === undefined ? undefined : loadProgram(spec);
}

/** `ckpt eval --eval-exec CMD`: named by --program, else by the checkpoint's meta. */
async function evalCommandProgram(args: Args, dir: string, step: number, evalExec: string) {
  const name =
    str(args, 'program') ??
    recordedProgram((await loadCheckpoint(dir, step, { loadModel: false, loadOptimizer: false })).meta).name;
  const metricName = str(args, 'metric');
  const mode = str(args, 'mode') ?? 'min';
  if (mode !== 'min' && mode !== 'max')
    throw new UsageError(`--mode must be min or max, got ${mode}`, { field: 'mode' });
  if (metricName === undefined && str(args, 'mode') !== undefined)
    throw new UsageError('--mode goes with --metric', { field: 'mode' });
  try {
    return commandProgram(evalExec, {
      name,
      evalExec,
      ...(metricName !== undefined ? { metric: { name: metricName, mode } } : {}),
    });
  } catch (err) {
    throw new UsageError((err as Error).message, { field: 'eval-exec' });
  }
}

async function defaultStep(dir: string, given: number | undefined): Promise<number> {
  if (given !== undefined) return given;
  return findLastStep(dir);
}

const evalCommand: Command = {
  name: 'eval',
  summary:
    'Evaluate a checkpoint with its program (the GPT: validation bits per byte); writes eval_<step>.json.',
  usage:
    'ckpt eval DIR [--step N] [--program PATH|NAME] [--data FILE] [--json]\n' +
    "          [--eval-exec CMD [--metric NAME --mode min|max]]   a command program's evaluation\n\n" +
    "Prints the program's primary metric (val_bpb for the GPT); --json prints every metric (as eval_<step>.json\n" +
    'holds them) and the primary one. --program is needed for a checkpoint of a program that is not built in.',
  options: {
    step: { type: 'string' },
    data: { type: 'string' },
    json: { type: 'boolean' },
    program: { type: 'string' },
    'eval-exec': { type: 'string' },
    metric: { type: 'string' },
    mode: { type: 'string' },
    // For a worker's evaluation child: the pipeline's command program as JSON (program/command.ts).
    'command-json': { type: 'string' },
  },
  async run(args) {
    expectPositionals(args, 1, 'eval');
    const dir = positional(args, 0, 'DIR', 'eval');
    const step = await defaultStep(dir, stepArg(args));
    const bar = new ProgressLine();
    const evalExec = str(args, 'eval-exec');
    const { evaluateCheckpoint } = require('../train/evaluate') as typeof import('../train/evaluate');
    const result = await evaluateCheckpoint(dir, step, {
      dataFile: str(args, 'data'),
      backend: loadConfig().backend,
      program:
        str(args, 'command-json') !== undefined
          ? commandEvalProgram(checkCommandProgram(JSON.parse(str(args, 'command-json')!), 'command-json'))
          : evalExec !== undefined
            ? commandEvalProgram(await evalCommandProgram(args, dir, step, evalExec))
            : await optionalProgram(args),
      onProgress: (done, total) => bar.update(`eval step ${step}: ${done}/${total}`),
    });
    bar.done();
    const flat = {
      step,
      ...result.metrics,
      program: result.program,
      metric: result.metric,
      evaluated_at: result.evaluated_at,
    };
    out(flag(args, 'json') ? JSON.stringify(flat, null, 2) : String(result.metrics[result.metric.name]));
    return 0;
  },
};

const sampleCommand: Command = {
  name: 'sample',
  summary: 'Generate text from a checkpoint (stdout: the prompt followed by the generated text).',
  usage:
    'ckpt sample DIR [--step N] --prompt TEXT [--tokens K] [--temperature T] [--seed S] [--program PATH|NAME]',
  options: {
    step: { type: 'string' },
    prompt: { type: 'string' },
    tokens: { type: 'string' },
    temperature: { type: 'string' },
    seed: { type: 'string' },
    program: { type: 'string' },
  },
  async run(args) {
    expectPositionals(args, 1, 'sample');
    const dir = positional(args, 0, 'DIR', 'sample');
    const prompt = str(args, 'prompt');
    if (prompt === undefined) throw new UsageError('sample: --prompt TEXT is required', { field: 'prompt' });
    const temperature = num(args, 'temperature') ?? 0;
    if (temperature < 0) throw new UsageError('--temperature must be >= 0', { field: 'temperature' });
    const step = await defaultStep(dir, stepArg(args));
    const { sampleText } = require('../train/sample') as typeof import('../train/sample');
    const text = await sampleText(dir, step, {
      prompt,
      tokens: int(args, 'tokens', 0) ?? 64,
      temperature,
      seed: int(args, 'seed', 0) ?? 0,
      backend: loadConfig().backend,
      program: await optionalProgram(args),
    });
    process.stdout.write(text + '\n');
    return 0;
  },
};

export const trainCommands: Command[] = [trainCommand, evalCommand, sampleCommand];
