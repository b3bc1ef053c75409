/**
 * What workflows and activities exchange: small, JSON-serialisable references (locations, steps, metrics),
 * never tensors. Workflows import this file for types only.
 */
import type { RetentionPolicy } from '../checkpoint/retention';

/** Flags of `ckpt train` that shape the run (the same names; undefined = default or from the checkpoint). */
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
  flags: TrainFlags;
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
}

export interface SegmentProgress {
  step: number;
  loss: number | null;
}

export interface EvalSummary {
  step: number;
  val_bpb: number;
  val_loss: number;
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
