import type { TrainFlags } from './types';

/** Flags for `ckpt train` from the pipeline's TrainFlags. */
export function trainArgs(flags: TrainFlags): string[] {
  const args: string[] = [];
  const add = (flag: string, value: unknown) => {
    if (value !== undefined && value !== null) args.push(`--${flag}`, String(value));
  };
  add('depth', flags.depth);
  add('n-embd', flags.nEmbd);
  add('n-head', flags.nHead);
  add('seq-len', flags.seqLen);
  add('batch', flags.batch);
  add('lr', flags.lr);
  add('warmup', flags.warmup);
  add('horizon', flags.horizon);
  add('schedule', flags.schedule);
  add('seed', flags.seed);
  add('data', flags.data);
  add('save-dtype', flags.saveDtype);
  return args;
}
