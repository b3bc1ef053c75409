/**
 * What a training process reports while it runs, one JSON line each (`ckpt train --progress-json`): the
 * training child writes these and the activities read them, so both sides share this one type.
 */
import type { TrainSummary } from './trainer';

export type TrainEvent =
  | {
      type: 'progress';
      step: number;
      loss: number;
      lr: number | null;
      stepsPerSec: number;
      /** A command program's own training metrics of the step (flat numbers). */
      metrics?: Record<string, number>;
    }
  /** A checkpoint this process wrote is committed. */
  | { type: 'saved'; step: number; seconds: number; bytes: number }
  /** The checkpoint training resumes from is loaded. */
  | { type: 'resumed'; step: number; seconds: number; bytes: number }
  | ({ type: 'done' } & TrainSummary);

export type DoneEvent = Extract<TrainEvent, { type: 'done' }>;

const TYPES = new Set(['progress', 'saved', 'resumed', 'done']);

/** A parsed line that is one of the events (the reader trusts the writer for the rest of the shape). */
export function isTrainEvent(value: Record<string, unknown>): value is TrainEvent & Record<string, unknown> {
  return typeof value.type === 'string' && TYPES.has(value.type);
}
