/**
 * Finding checkpoints: which steps exist (committed = manifest present), which of them verify, the newest
 * good one to resume from, and the largest model tag (nanochat's find_largest_model / find_last_step).
 */
import { CheckpointError, NoCheckpointError } from './errors';
import { warn0 } from './log';
import { type Location, openStore } from './location';
import { parseEvalMetrics } from './manifest';
import { evalFile, parseFileName, validateName } from './names';
import type { Store } from './store';
import { verifyCheckpoint, type FileProblem } from './verify';

export interface CheckpointInfo {
  step: number;
  committed: boolean;
  /** Only set when verification was asked for. */
  verified?: boolean;
  problems?: FileProblem[];
  files: string[];
  bytes: number;
  mtimeMs: number;
  /** Top-level numbers of eval_<step>.json, when it exists and parses. */
  metrics?: Record<string, number>;
}

export interface ListOptions {
  /** Hash every file of every committed step (slow on big checkpoints). */
  verify?: boolean;
}

/** Every step that has files in `dir`, committed or not, ascending. */
export async function listCheckpoints(dir: Location, options: ListOptions = {}): Promise<CheckpointInfo[]> {
  const store = openStore(dir);
  const bySteps = new Map<number, CheckpointInfo>();
  for (const entry of await store.list()) {
    const parsed = parseFileName(entry.key);
    if (
      !parsed ||
      parsed.step === undefined ||
      !['model', 'optim', 'meta', 'manifest', 'eval'].includes(parsed.kind)
    ) {
      continue;
    }
    let info = bySteps.get(parsed.step);
    if (!info) {
      info = { step: parsed.step, committed: false, files: [], bytes: 0, mtimeMs: 0 };
      bySteps.set(parsed.step, info);
    }
    info.files.push(entry.key);
    info.bytes += entry.bytes;
    info.mtimeMs = Math.max(info.mtimeMs, entry.mtimeMs);
    if (parsed.kind === 'manifest') info.committed = true;
  }
  const infos = [...bySteps.values()].sort((a, b) => a.step - b.step);
  for (const info of infos) {
    if (info.files.includes(evalFile(info.step))) info.metrics = await readMetrics(store, info.step);
    if (options.verify && info.committed) {
      const result = await verifyCheckpoint(store, info.step);
      info.verified = result.ok;
      info.problems = result.problems;
    }
  }
  return infos;
}

async function readMetrics(store: Store, step: number): Promise<Record<string, number> | undefined> {
  try {
    return parseEvalMetrics(await store.read(evalFile(step)), step, evalFile(step));
  } catch (err) {
    if (!(err instanceof CheckpointError)) throw err;
    warn0(`ignoring unreadable ${evalFile(step)}: ${err.message}`, { file: evalFile(step), step });
    return undefined;
  }
}

/** Committed steps (manifest present), ascending, without reading any data. */
export async function committedSteps(dir: Location): Promise<number[]> {
  const store = openStore(dir);
  const steps: number[] = [];
  for (const entry of await store.list()) {
    const parsed = parseFileName(entry.key);
    if (parsed?.kind === 'manifest' && parsed.step !== undefined) steps.push(parsed.step);
  }
  return steps.sort((a, b) => a - b);
}

export interface FindLastStepOptions {
  /** Hash-verify candidates, newest first, and skip corrupt ones (default true). */
  verify?: boolean;
  /** Only consider steps at or below this one. */
  atMost?: number;
}

/**
 * The highest committed step whose files verify. A corrupt newest checkpoint is skipped with a warning
 * naming it, so resume falls back to the previous good one instead of failing or loading garbage.
 */
export async function findLastStep(dir: Location, options: FindLastStepOptions = {}): Promise<number> {
  const store = openStore(dir);
  const steps = (await committedSteps(store)).filter(
    (s) => options.atMost === undefined || s <= options.atMost,
  );
  for (let i = steps.length - 1; i >= 0; i--) {
    const step = steps[i]!;
    if (options.verify === false) return step;
    const result = await verifyCheckpoint(store, step);
    if (result.ok) return step;
    warn0(`skipping step ${step}: it does not verify (${result.problems.map((p) => p.message).join('; ')})`, {
      step,
      files: result.problems.map((p) => p.file),
    });
  }
  throw new NoCheckpointError(
    steps.length === 0
      ? `no committed checkpoints in ${store.location}`
      : `no committed checkpoint in ${store.location} verifies (${steps.length} found, all corrupt)`,
    { file: store.location },
  );
}

const DEPTH_TAG = /^d(\d+)$/;

/**
 * The tag to use when none is given: the largest `d<N>` model that has a committed checkpoint, else the
 * most recently modified tag with one. Tags with no committed checkpoint are never guessed.
 */
export async function findLargestModel(checkpointsDir: Location): Promise<string> {
  const store = openStore(checkpointsDir);
  const candidates: Array<{ tag: string; depth: number | null; mtimeMs: number }> = [];
  for (const tag of await store.listDirs()) {
    try {
      validateName(tag, 'tag');
    } catch {
      continue;
    }
    const entries = await store.list(tag);
    if (!entries.some((e) => parseFileName(e.key.slice(tag.length + 1))?.kind === 'manifest')) continue;
    const m = DEPTH_TAG.exec(tag);
    candidates.push({
      tag,
      depth: m ? Number(m[1]) : null,
      mtimeMs: Math.max(...entries.map((e) => e.mtimeMs)),
    });
  }
  if (candidates.length === 0) {
    throw new NoCheckpointError(`no model tags with committed checkpoints in ${store.location}`, {
      file: store.location,
    });
  }
  const byDepth = candidates.filter((c) => c.depth !== null).sort((a, b) => b.depth! - a.depth!);
  if (byDepth.length > 0) return byDepth[0]!.tag;
  return candidates.sort((a, b) => b.mtimeMs - a.mtimeMs)[0]!.tag;
}
