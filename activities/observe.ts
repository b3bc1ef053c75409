/**
 * What the activities of this worker process did, as events for whoever listens (the worker's metrics, see
 * workers/metrics.ts). Training runs in a child process (`ckpt train --progress-json`); its JSON events are
 * forwarded here with the checkpoint directory added. A listener that throws never fails an activity.
 */
import type { DoneEvent, TrainEvent } from '../train/events';

export type ActivityEvent =
  /** One training step done (rank: of a multi-rank segment; absent for single-rank segments). */
  | {
      type: 'progress';
      dir: string;
      step: number;
      loss: number | null;
      stepsPerSec: number;
      rank?: number;
      /** A command program's training metrics of the step. */
      metrics?: Record<string, number>;
    }
  /** A checkpoint this process wrote was committed: save time and bytes this rank wrote. */
  | { type: 'saved'; dir: string; step: number; seconds: number; bytes: number; rank?: number }
  /** The checkpoint a segment resumes from was loaded: load time and bytes read. */
  | { type: 'resumed'; dir: string; step: number; seconds: number; bytes: number; rank?: number }
  /** A training segment (or one rank of it) ended at its end step. */
  | { type: 'segment'; dir: string; startStep: number; endStep: number; seconds: number; rank?: number }
  /** A checkpoint was evaluated. */
  | { type: 'evaluated'; dir: string; step: number; seconds: number; metrics: Record<string, number> };

type Listener = (event: ActivityEvent) => void;

const listeners = new Set<Listener>();

/** Receive every event of this process's activities; returns the function that stops it. */
export function observeActivities(listener: Listener): () => void {
  listeners.add(listener);
  return () => void listeners.delete(listener);
}

export function emitActivityEvent(event: ActivityEvent): void {
  for (const listener of listeners) {
    try {
      listener(event);
    } catch {
      // Observing must never change what an activity does.
    }
  }
}

/** Forward one event of a training child (progress, saved, resumed). */
export function forwardTrainingEvent(dir: string, event: TrainEvent, rank?: number): void {
  const ranked = rank === undefined ? {} : { rank };
  if (event.type === 'progress') {
    emitActivityEvent({
      type: 'progress',
      dir,
      step: event.step,
      loss: Number.isFinite(event.loss) ? event.loss : null,
      stepsPerSec: event.stepsPerSec,
      ...(event.metrics ? { metrics: event.metrics } : {}),
      ...ranked,
    });
  } else if (event.type === 'saved' || event.type === 'resumed') {
    emitActivityEvent({
      type: event.type,
      dir,
      step: event.step,
      seconds: event.seconds,
      bytes: event.bytes,
      ...ranked,
    });
  }
}

/** A training child's `done` event: its segment (or this rank of it) reached its end step. */
export function emitSegmentDone(dir: string, done: DoneEvent, rank?: number): void {
  emitActivityEvent({
    type: 'segment',
    dir,
    startStep: done.startStep,
    endStep: done.endStep,
    seconds: done.seconds,
    ...(rank === undefined ? {} : { rank }),
  });
}
