/**
 * Learning-rate schedule. It depends on the step and its own horizon only — never on `--steps` — so a run
 * to 20 resumed to 30 sees the same rates as a run straight to 30. The horizon is saved in meta.
 */
import { InvalidArgumentError } from '../checkpoint';

export interface ScheduleConfig {
  kind: 'constant' | 'cosine';
  lr: number;
  warmup: number;
  /** Steps after which the cosine schedule stays at its floor (10% of lr). Ignored by 'constant'. */
  horizon: number;
}

export const DEFAULT_SCHEDULE: ScheduleConfig = { kind: 'constant', lr: 3e-3, warmup: 10, horizon: 1000 };

export function validateSchedule(s: ScheduleConfig): ScheduleConfig {
  if (s.kind !== 'constant' && s.kind !== 'cosine') {
    throw new InvalidArgumentError(`schedule must be constant or cosine, got "${s.kind}"`, {
      field: 'schedule',
    });
  }
  if (!(s.lr > 0) || !Number.isFinite(s.lr))
    throw new InvalidArgumentError(`lr must be > 0, got ${s.lr}`, { field: 'lr' });
  if (!Number.isSafeInteger(s.warmup) || s.warmup < 0) {
    throw new InvalidArgumentError(`warmup must be an integer >= 0, got ${s.warmup}`, { field: 'warmup' });
  }
  if (!Number.isSafeInteger(s.horizon) || s.horizon < 1) {
    throw new InvalidArgumentError(`horizon must be an integer >= 1, got ${s.horizon}`, { field: 'horizon' });
  }
  return s;
}

/** Rate for the update that takes the model from `step` to `step + 1`. */
export function learningRate(s: ScheduleConfig, step: number): number {
  const warm = s.warmup > 0 ? Math.min(1, (step + 1) / s.warmup) : 1;
  if (s.kind === 'constant') return s.lr * warm;
  const progress = Math.min(1, step / s.horizon);
  return s.lr * warm * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * progress)));
}
