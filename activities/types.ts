/**
 * What workflows and activities exchange: small, JSON-serialisable references (locations, steps, metrics),
 * never tensors. Workflows import this file for types only.
 */
import type { RetentionPolicy } from '../checkpoint/retention';
import type { RunSettings } from '../train/settings';
import type { CommandProgram } from '../program/command';

/**
 * What a pipeline trains: the program, the config keys the user set, and the loop's settings (one schema:
 * train/settings.ts). Unset values come from the program's defaults, or on resume from the checkpoint.
 */
export interface TrainingSpec {
  /** A program name (built in, or registered on the training workers) or an absolute module path. */
  program: string;
  /** A command program (`ckpt pipeline start --exec`): run per segment instead of a module; `program` is its name. */
  exec?: CommandProgram;
  config: Record<string, unknown>;
  run: RunSettings;
  /**
   * Orchestration only: segments train nothing and save nothing; they return at once with the step
   * advanced. For load tests of the pipeline itself (history size, continue-as-new, worker memory).
   */
  noop?: boolean;
}

/**
 * The GPT flags pipelines carried before programs existed; runs started then still have them in their
 * input (activities turn them into a TrainingSpec).
 */
export interface TrainFlags {
  depth?: number;
  nEmbd?: number;
  nHead?: number;
  seqLen?: number;
  batch?: number;
  lr?: number;
  warmup?: number;
  horizon?: number;
  schedule?: 'constant' | 'cosine';
  seed?: number;
  data?: string;
  saveDtype?: 'f32' | 'bf16' | 'f16';
  /**
   * Orchestration only: segments train nothing and save nothing; they return at once with the step
   * advanced. For load tests of the pipeline itself (history size, continue-as-new, worker memory).
   */
  noop?: boolean;
}

export interface SegmentInput {
  /** Checkpoint directory: ROOT/<source_dir>/<tag> (a path or s3://…). */
  dir: string;
  /** Absolute step this segment trains to. */
  toStep: number;
  /** The step the workflow believes the segment starts from (the child finds the real one). */
  fromStep?: number;
  saveEvery: number;
  training?: TrainingSpec;
  /** Runs started before programs existed. */
  flags?: TrainFlags;
}

export interface SegmentResult {
  startStep: number;
  endStep: number;
  saved: number[];
  finalLoss: number | null;
  backend: string;
  seconds: number;
  /** Which attempt of the activity produced this (2+ means it resumed after a failure). */
  attempt: number;
  /**
   * The task queue of the worker that keeps this run's state in memory after the segment (sticky
   * segments, activities/sticky.ts): the pipeline schedules the next segment there first.
   */
  stickyQueue?: string;
  /** The segment continued from the state its worker kept in memory: no process start, no checkpoint read. */
  inMemory?: boolean;
}

export interface SegmentProgress {
  step: number;
  loss: number | null;
  /** A command program's training metrics of that step. */
  metrics?: Record<string, number>;
}

export interface EvalSummary {
  step: number;
  /** The program's metrics (flat numbers, e.g. val_bpb and val_loss for the GPT). */
  metrics: Record<string, number>;
  /** The program's primary metric, by which the pipeline tracks the best checkpoint. */
  metric: { name: string; mode: 'min' | 'max' };
}

export interface EvalInput {
  dir: string;
  step: number;
  /** The program that wrote the checkpoint (default: the built-in one its meta names). */
  program?: string;
  /** Evaluation data override (the GPT's held-out text). */
  data?: string;
  /** The pipeline's command program, when it is one (its evaluation command evaluates). */
  exec?: CommandProgram;
}

export interface CheckpointSummary {
  step: number;
  committed: boolean;
  bytes: number;
  metrics?: Record<string, number>;
}

export interface PruneSummary {
  keep: Array<{ step: number; reasons: string[] }>;
  remove: Array<{ step: number; why: string }>;
  deleted: number[];
}

/** One rank of a multi-rank segment attempt. */
export interface RankSegmentInput extends SegmentInput {
  rank: number;
  worldSize: number;
  /** Attempt number of the group: the rendezvous refuses ranks of any other generation. */
  generation: number;
  /** The pipeline workflow that runs the rendezvous. */
  workflowId: string;
}

export interface JoinRequest {
  generation: number;
  rank: number;
  /** host:port where rank 0 listens (rank 0 only). */
  address: string | null;
}

export interface Rendezvous {
  generation: number;
  worldSize: number;
  master: string;
}

export type { RetentionPolicy };
