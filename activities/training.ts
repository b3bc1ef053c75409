import type { TrainRequest } from '../train/request';
import type { CommandProgram } from '../program/command';
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

/** The request a training child gets for a segment (train/request.ts); `program` is what the child loads. */
export function trainRequest(
  input: Pick<SegmentInput, 'dir' | 'toStep' | 'saveEvery' | 'training' | 'flags'>,
  program: string | CommandProgram,
  options: { reshard?: boolean } = {},
): TrainRequest {
  const training = trainingOf(input);
  const exec = typeof program === 'string' ? undefined : program;
  return {
    dir: input.dir,
    steps: input.toStep,
    saveEvery: input.saveEvery,
    resume: 'last',
    ...(options.reshard ? { reshard: true } : {}),
    program: exec ? exec.name : (program as string),
    ...(exec ? { exec } : {}),
    config: training.config,
    run: Object.fromEntries(Object.entries(training.run).filter(([, v]) => v !== undefined && v !== null)),
  };
}
