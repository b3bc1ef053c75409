import { runSettingsToArgs } from '../train/settings';
import type { SegmentInput, TrainFlags, TrainingSpec } from './types';

/** The segment's TrainingSpec; runs started before programs existed carry GPT flags instead. */
export function trainingOf(input: Pick<SegmentInput, 'training' | 'flags'>): TrainingSpec {
  if (input.training) return input.training;
  const f: TrainFlags = input.flags ?? {};
  const config = Object.fromEntries(
    Object.entries({
      n_layer: f.depth,
      n_embd: f.nEmbd,
      n_head: f.nHead,
      sequence_len: f.seqLen,
      data: f.data,
    }).filter(([, v]) => v !== undefined),
  );
  return {
    program: 'gpt',
    config,
    run: {
      batch: f.batch,
      lr: f.lr,
      warmup: f.warmup,
      horizon: f.horizon,
      schedule: f.schedule,
      seed: f.seed,
      saveDtype: f.saveDtype,
    },
    ...(f.noop ? { noop: true } : {}),
  };
}

/** `ckpt train` arguments for a TrainingSpec whose program is `programSpec` (a path or built-in name). */
export function trainArgs(training: TrainingSpec, programSpec: string): string[] {
  const run = Object.fromEntries(
    Object.entries(training.run).filter(([, v]) => v !== undefined && v !== null),
  );
  return [
    '--program',
    programSpec,
    ...(Object.keys(training.config).length > 0 ? ['--config', JSON.stringify(training.config)] : []),
    ...runSettingsToArgs(run),
  ];
}
