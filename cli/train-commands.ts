/** `ckpt train | eval | sample`: training with exact resume, evaluation and generation from checkpoints. */
import { findLastStep, joinLocation } from '../checkpoint';
import { modelTag, normalizeConfig } from '../model/gpt';
import { evaluateCheckpoint } from '../train/evaluate';
import { sampleText } from '../train/sample';
import { train, type Progress } from '../train/trainer';
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

export const TRAIN_OPTIONS = {
  root: { type: 'string' },
  dir: { type: 'string' },
  source: { type: 'string' },
  tag: { type: 'string' },
  depth: { type: 'string' },
  steps: { type: 'string' },
  'save-every': { type: 'string' },
  seed: { type: 'string' },
  data: { type: 'string' },
  resume: { type: 'boolean' },
  'resume-from-step': { type: 'string' },
  'save-dtype': { type: 'string' },
  batch: { type: 'string' },
  'seq-len': { type: 'string' },
  'n-embd': { type: 'string' },
  'n-head': { type: 'string' },
  lr: { type: 'string' },
  warmup: { type: 'string' },
  schedule: { type: 'string' },
  horizon: { type: 'string' },
  // For the pipeline's training activity: progress as JSON lines on stdout instead of a progress bar.
  'progress-json': { type: 'boolean' },
  nproc: { type: 'string' },
  reshard: { type: 'boolean' },
} as const;

type Args = Parameters<Command['run']>[0];

/** The train flags as trainer options (shared with `ckpt pipeline start`). */
export function trainSettings(args: Args) {
  const depth = int(args, 'depth', 1);
  const saveDtype = (str(args, 'save-dtype') ?? 'f32').toUpperCase();
  if (!['F32', 'BF16', 'F16'].includes(saveDtype)) {
    throw new UsageError(`--save-dtype must be f32, bf16 or f16, got "${str(args, 'save-dtype')}"`, {
      field: 'save-dtype',
    });
  }
  const schedule = str(args, 'schedule');
  if (schedule !== undefined && schedule !== 'constant' && schedule !== 'cosine') {
    throw new UsageError(`--schedule must be constant or cosine, got "${schedule}"`, { field: 'schedule' });
  }
  const model = {
    ...(depth !== undefined ? { n_layer: depth } : {}),
    ...(int(args, 'n-embd', 1) !== undefined ? { n_embd: int(args, 'n-embd', 1) } : {}),
    ...(int(args, 'n-head', 1) !== undefined ? { n_head: int(args, 'n-head', 1) } : {}),
    ...(int(args, 'seq-len', 2) !== undefined ? { sequence_len: int(args, 'seq-len', 2) } : {}),
  };
  return {
    model,
    seed: int(args, 'seed', 0),
    batch: int(args, 'batch', 1),
    schedule: {
      ...(num(args, 'lr') !== undefined ? { lr: num(args, 'lr') } : {}),
      ...(int(args, 'warmup', 0) !== undefined ? { warmup: int(args, 'warmup', 0) } : {}),
      ...(int(args, 'horizon', 1) !== undefined ? { horizon: int(args, 'horizon', 1) } : {}),
      ...(schedule !== undefined ? { kind: schedule as 'constant' | 'cosine' } : {}),
    },
    dataFile: str(args, 'data'),
    saveDtype: saveDtype as 'F32' | 'BF16' | 'F16',
  };
}

/** ROOT/<source_dir>/<tag>; the tag defaults to d<depth>. */
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
  const depth = int(args, 'depth', 1);
  let tag = nameArg(args, 'tag');
  if (tag === undefined) {
    if (depth === undefined)
      throw new UsageError(`${command}: give --depth D (the tag defaults to d<D>) or --tag T`);
    tag = modelTag(normalizeConfig({ n_layer: depth }));
  }
  return { root, source, tag, dir: joinLocation(root, sourceDir(config, source), tag) };
}

const trainCommand: Command = {
  name: 'train',
  summary: 'Train the GPT, saving verified checkpoints; resume exactly where a run stopped.',
  usage:
    'ckpt train --root ROOT [--source base] [--tag T] --depth D --steps N [--save-every K] [--seed S]\n' +
    '           [--dir ROOT/<source_dir>/<tag> instead of --root/--source/--tag]\n' +
    '           [--data FILE] [--resume | --resume-from-step N] [--save-dtype f32|bf16|f16]\n' +
    '           [--batch B] [--seq-len L] [--n-embd E] [--n-head H] [--lr X]\n' +
    '           [--schedule constant|cosine] [--warmup W] [--horizon H] [--nproc W] [--reshard]\n\n' +
    '--steps is the absolute target step. The learning-rate schedule has its own horizon, so a run to 20\n' +
    'resumed to 30 equals a run to 30. On resume, flags that are not given come from the checkpoint.\n' +
    '--nproc W starts W rank processes (data parallel, ZeRO-1 sharded optimizer); --batch is the global batch.\n' +
    'Resuming a checkpoint saved with another world size needs --reshard.',
  options: TRAIN_OPTIONS,
  async run(args) {
    expectPositionals(args, 0, 'train');
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
    const settings = trainSettings(args);
    const groupOptions = optionsFromEnv();
    const group = groupOptions.worldSize > 1 ? await initProcessGroup(groupOptions) : undefined;
    const json = flag(args, 'progress-json');
    const emit = (event: Record<string, unknown>) => process.stdout.write(JSON.stringify(event) + '\n');
    const bar = new ProgressLine();
    const controller = new AbortController();
    const stop = () => controller.abort();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    // Started by a worker: if the worker dies, stop at once rather than train on as an orphan (a commit in
    // flight is atomic, so exiting mid-save leaves nothing half-done).
    if (process.send) {
      process.once('disconnect', () => process.exit(137));
      // The channel only watches the parent; it must not keep this process alive once training is done.
      process.channel?.unref();
    }
    let summary;
    try {
      summary = await train({
        dir,
        steps,
        saveEvery: int(args, 'save-every', 1) ?? Math.max(1, Math.min(steps, 100)),
        ...settings,
        resume: from !== undefined ? { step: from } : flag(args, 'resume') ? 'last' : 'none',
        backend: loadConfig().backend,
        storeConfig: loadConfig().s3,
        group,
        reshard: flag(args, 'reshard'),
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
      // Open sockets would keep this rank alive after an error.
      await group?.close();
    }
    bar.done();
    if (json) emit({ type: 'done', ...summary });
    note(
      summary.endStep === summary.startStep
        ? `nothing to do: ${tag} is already at step ${summary.startStep}`
        : `trained ${tag} from step ${summary.startStep} to ${summary.endStep} in ${summary.seconds.toFixed(1)} s on ${summary.backend}` +
            (summary.finalLoss !== null ? `, final loss ${summary.finalLoss.toFixed(4)}` : ''),
    );
    return 0;
  },
};

async function defaultStep(dir: string, given: number | undefined): Promise<number> {
  if (given !== undefined) return given;
  return findLastStep(dir);
}

const evalCommand: Command = {
  name: 'eval',
  summary: 'Validation bits-per-byte of a checkpoint on the held-out split; writes eval_<step>.json.',
  usage: 'ckpt eval DIR [--step N] [--data FILE] [--json]      prints val_bpb',
  options: { step: { type: 'string' }, data: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    expectPositionals(args, 1, 'eval');
    const dir = positional(args, 0, 'DIR', 'eval');
    const step = await defaultStep(dir, stepArg(args));
    const bar = new ProgressLine();
    const result = await evaluateCheckpoint(dir, step, {
      dataFile: str(args, 'data'),
      backend: loadConfig().backend,
      onProgress: (done, total) => bar.update(`eval step ${step}: ${done}/${total} held-out windows`),
    });
    bar.done();
    out(flag(args, 'json') ? JSON.stringify(result, null, 2) : String(result.val_bpb));
    return 0;
  },
};

const sampleCommand: Command = {
  name: 'sample',
  summary: 'Generate text from a checkpoint (stdout: the prompt followed by the generated text).',
  usage: 'ckpt sample DIR [--step N] --prompt TEXT [--tokens K] [--temperature T] [--seed S]',
  options: {
    step: { type: 'string' },
    prompt: { type: 'string' },
    tokens: { type: 'string' },
    temperature: { type: 'string' },
    seed: { type: 'string' },
  },
  async run(args) {
    expectPositionals(args, 1, 'sample');
    const dir = positional(args, 0, 'DIR', 'sample');
    const prompt = str(args, 'prompt');
    if (prompt === undefined) throw new UsageError('sample: --prompt TEXT is required', { field: 'prompt' });
    const temperature = num(args, 'temperature') ?? 0;
    if (temperature < 0) throw new UsageError('--temperature must be >= 0', { field: 'temperature' });
    const step = await defaultStep(dir, stepArg(args));
    const text = await sampleText(dir, step, {
      prompt,
      tokens: int(args, 'tokens', 0) ?? 64,
      temperature,
      seed: int(args, 'seed', 0) ?? 0,
      backend: loadConfig().backend,
    });
    process.stdout.write(text + '\n');
    return 0;
  },
};

export const trainCommands: Command[] = [trainCommand, evalCommand, sampleCommand];
