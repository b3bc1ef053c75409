/**
 * What the Temporal Web UI and `temporal workflow list` show of a pipeline: search attributes (filterable
 * columns) and a memo (a small JSON summary on the run's page).
 *
 * The client sets CkptTag, CkptDir, CkptStep and CkptState when it starts a pipeline, for the attributes the
 * namespace has registered (a cluster may have none of them). The workflow then keeps CkptStep, CkptBest,
 * CkptState and the memo { step, targetSteps, bestMetric, state } current. Those upserts are workflow
 * commands, so they are taken only by runs for which `patched(VISIBILITY_PATCH)` is true (CkptState: and
 * `patched(STATE_ATTRIBUTE_PATCH)`): a history recorded before this code replays unchanged. No Node builtins
 * here: workflows import this module.
 */
import {
  defineSearchAttributeKey,
  SearchAttributeType,
  type SearchAttributeUpdatePair,
} from '@temporalio/common';
import { patched, upsertMemo, upsertSearchAttributes } from '@temporalio/workflow';

export const CkptTag = defineSearchAttributeKey('CkptTag', SearchAttributeType.KEYWORD);
export const CkptDir = defineSearchAttributeKey('CkptDir', SearchAttributeType.KEYWORD);
export const CkptStep = defineSearchAttributeKey('CkptStep', SearchAttributeType.INT);
export const CkptBest = defineSearchAttributeKey('CkptBest', SearchAttributeType.DOUBLE);
export const CkptState = defineSearchAttributeKey('CkptState', SearchAttributeType.KEYWORD);

/** Every search attribute a pipeline uses, with its type as the Temporal CLI spells it. */
export const SEARCH_ATTRIBUTES = [
  { key: CkptTag, cliType: 'Keyword', meaning: 'checkpoint tag (the last part of the directory)' },
  { key: CkptDir, cliType: 'Keyword', meaning: 'checkpoint directory' },
  { key: CkptStep, cliType: 'Int', meaning: 'step reached (updated after every segment)' },
  { key: CkptBest, cliType: 'Double', meaning: 'best evaluation metric so far' },
  { key: CkptState, cliType: 'Keyword', meaning: 'pipeline state (running, paused, completed, cancelled…)' },
] as const;

/** Patch id of the visibility upserts (see the file comment). */
export const VISIBILITY_PATCH = 'pipeline-visibility-v1';

/**
 * Patch id of the CkptState upserts: runs of the previous version upserted the state into the memo only, and
 * an upsert where they had none (a pause, the end) is a command their history does not have.
 */
export const STATE_ATTRIBUTE_PATCH = 'pipeline-state-attribute-v1';

export interface PipelineMemo {
  step: number;
  targetSteps: number;
  bestMetric: { step: number; value: number } | null;
  state: string;
}

/** Keeps the search attributes and the memo of one workflow run current; upserts only what changed. */
export class PipelineVisibility {
  private lastMemo = '';
  private lastStep: number | null = null;
  private lastBest: number | null = null;
  private lastState: string | null = null;

  private constructor(
    private readonly enabled: boolean,
    private readonly stateEnabled: boolean,
    private readonly attributes: ReadonlySet<string>,
  ) {}

  /**
   * Call once, at the start of the run, before its first await (so the patch decision sits at the same
   * point of every replay). `attributes`: the names the namespace has registered, from the input.
   */
  static start(attributes: readonly string[] | undefined): PipelineVisibility {
    const enabled = patched(VISIBILITY_PATCH);
    return new PipelineVisibility(
      enabled,
      enabled && patched(STATE_ATTRIBUTE_PATCH),
      new Set(attributes ?? []),
    );
  }

  update(s: PipelineMemo): void {
    if (!this.enabled) return;
    const updates: SearchAttributeUpdatePair[] = [];
    if (this.attributes.has(CkptStep.name) && s.step !== this.lastStep) {
      updates.push({ key: CkptStep, value: s.step });
      this.lastStep = s.step;
    }
    const best = s.bestMetric?.value ?? null;
    if (
      this.attributes.has(CkptBest.name) &&
      best !== null &&
      Number.isFinite(best) &&
      best !== this.lastBest
    ) {
      updates.push({ key: CkptBest, value: best });
      this.lastBest = best;
    }
    if (this.stateEnabled && this.attributes.has(CkptState.name) && s.state !== this.lastState) {
      updates.push({ key: CkptState, value: s.state });
      this.lastState = s.state;
    }
    if (updates.length > 0) upsertSearchAttributes(updates);
    const memo: PipelineMemo = {
      step: s.step,
      targetSteps: s.targetSteps,
      bestMetric: s.bestMetric,
      state: s.state,
    };
    const text = JSON.stringify(memo);
    if (text !== this.lastMemo) {
      upsertMemo({ ...memo });
      this.lastMemo = text;
    }
  }
}
