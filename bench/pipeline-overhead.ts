/**
 * Orchestration overhead: the wall time of a pipeline (Temporal dev server, a control and a training
 * worker, segments of ≥ 10 s each run as an activity; with sticky segments (the default) the first starts
 * a child and the next ones continue in it from memory, CKPT_STICKY_SEGMENTS=0: a fresh `ckpt train
 * --resume` child per segment) against the
 * same steps in one `ckpt train` process. Rounds alternate direct and pipeline runs; both train the same
 * model on the same data with the same saves, and both end at bitwise the same weights (checked).
 *
 * The segment length is calibrated first: a short direct run measures steps/s, and the segment is the
 * number of steps that takes BENCH_SEGMENT_S seconds (default 12).
 *
 * Usage: npm run bench:pipeline-overhead   (BENCH_ROUNDS default 3, BENCH_SEGMENTS default 3)
 */
import assert from 'node:assert/strict';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { defaultPayloadConverter } from '@temporalio/common';
import { optionalTsToMs } from '@temporalio/common/lib/time';
import type { SegmentResult } from '../activities/types';
import type { PipelineState } from '../workflows/pipeline';
import { sha256, SMALL_MODEL, temporalEnv, waitFor, type TemporalTestEnv } from '../test/helpers/temporal';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SEGMENTS = Number(process.env.BENCH_SEGMENTS ?? 3);
const SEGMENT_S = Number(process.env.BENCH_SEGMENT_S ?? 12);
const SAVE_EVERY = 50;
const T = temporalEnv('bench-overhead');
let env: TemporalTestEnv;

const stat = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { min: s[0]!, median, max: s.at(-1)! };
};

async function direct(tag: string, steps: number): Promise<number> {
  const t0 = Date.now();
  const res = await env.ckpt(
    [
      'train',
      '--root',
      join(env.dir, 'direct'),
      '--tag',
      tag,
      ...SMALL_MODEL,
      '--steps',
      String(steps),
      '--save-every',
      String(SAVE_EVERY),
    ],
    {
      timeoutMs: 1_800_000,
    },
  );
  assert.equal(res.code, 0, res.stderr);
  return (Date.now() - t0) / 1000;
}

async function pipeline(
  tag: string,
  steps: number,
  segment: number,
): Promise<{ seconds: number; state: PipelineState; cliS: number } & Breakdown> {
  const t0 = Date.now();
  const res = await env.ckpt([
    'pipeline',
    'start',
    '--root',
    join(env.dir, 'pipe'),
    '--tag',
    tag,
    ...SMALL_MODEL,
    '--steps',
    String(steps),
    '--segment-steps',
    String(segment),
    '--save-every',
    String(SAVE_EVERY),
  ]);
  assert.equal(res.code, 0, res.stderr);
  const cliS = (Date.now() - t0) / 1000;
  const handle = env.client.workflow.getHandle(res.stdout.trim());
  await waitFor('the pipeline to close', async () => (await handle.describe()).status.name !== 'RUNNING', {
    timeoutMs: 1_800_000,
    intervalMs: 100,
  });
  const seconds = (Date.now() - t0) / 1000;
  return {
    seconds,
    cliS,
    state: (await handle.result()) as PipelineState,
    ...(await boundaries(handle.workflowId)),
  };
}

/**
 * Where a pipeline's extra time goes, from its history: the gap between one segment's completion and the
 * next one's start (the workflow task, scheduling, a sticky or a fresh child), and how many segments
 * continued in memory.
 */
interface Breakdown {
  gapsS: number[];
  inMemory: number;
  /** Workflow started → first segment started; last segment completed → workflow closed. */
  headS: number;
  tailS: number;
  /** The segments' activity time, start to completion, summed. */
  segmentsS: number;
}

async function boundaries(id: string): Promise<Breakdown> {
  const history = await env.client.workflow.getHandle(id).fetchHistory();
  const ms = (t: unknown) => optionalTsToMs(t as never) ?? NaN;
  const gapsS: number[] = [];
  let inMemory = 0;
  let lastCompleted: number | undefined;
  let firstStarted: number | undefined;
  let lastStarted = NaN;
  let segmentsS = 0;
  const scheduled = new Set<string>();
  const events = history.events ?? [];
  for (const e of events) {
    if (e.activityTaskScheduledEventAttributes?.activityType?.name === 'trainSegment')
      scheduled.add(String(e.eventId));
    const started = e.activityTaskStartedEventAttributes;
    if (started && scheduled.has(String(started.scheduledEventId))) {
      lastStarted = ms(e.eventTime);
      firstStarted ??= lastStarted;
      if (lastCompleted !== undefined) gapsS.push((lastStarted - lastCompleted) / 1000);
    }
    const completed = e.activityTaskCompletedEventAttributes;
    if (completed && scheduled.has(String(completed.scheduledEventId))) {
      lastCompleted = ms(e.eventTime);
      segmentsS += (lastCompleted - lastStarted) / 1000;
      const result = defaultPayloadConverter.fromPayload(completed.result!.payloads![0]!) as SegmentResult;
      if (result.inMemory) inMemory += 1;
    }
  }
  const headS = ((firstStarted ?? NaN) - ms(events[0]?.eventTime)) / 1000;
  const tailS = (ms(events.at(-1)?.eventTime) - (lastCompleted ?? NaN)) / 1000;
  return { gapsS, inMemory, headS, tailS, segmentsS };
}

const finalModel = (root: string, tag: string, steps: number) =>
  sha256(join(root, 'base_checkpoints', tag, `model_${String(steps).padStart(6, '0')}.safetensors`));

test('orchestration overhead', { timeout: 7_200_000 }, async () => {
  env = await T.start();
  const sticky = { CKPT_STICKY_SEGMENTS: process.env.CKPT_STICKY_SEGMENTS ?? '1' };
  await Promise.all([env.startWorker('control'), env.startWorker('train', { env: sticky })]);
  const load0 = loadavg()[0]!;
  // Calibration: steps/s of the small model on this machine now (start-up excluded by difference).
  const a = await direct('cal-a', 100);
  const b = await direct('cal-b', 400);
  const stepsPerS = 300 / Math.max(0.1, b - a);
  const segment = Math.max(SAVE_EVERY, Math.round((SEGMENT_S * stepsPerS) / SAVE_EVERY) * SAVE_EVERY);
  const steps = segment * SEGMENTS;
  process.stderr.write(
    `calibration: ${stepsPerS.toFixed(1)} steps/s → segments of ${segment} steps, ${steps} steps in all\n`,
  );

  const directS: number[] = [];
  const pipeS: number[] = [];
  const ratios: number[] = [];
  let retries = 0;
  const gaps: number[] = [];
  let inMemory = 0;
  const parts = { cli: [] as number[], head: [] as number[], tail: [] as number[], segments: [] as number[] };
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? ['direct', 'pipeline'] : ['pipeline', 'direct'];
    let d = 0;
    let p = 0;
    for (const which of order) {
      if (which === 'direct') d = await direct(`d${round}`, steps);
      else {
        const r = await pipeline(`p${round}`, steps, segment);
        assert.equal(r.state.state, 'completed');
        assert.equal(r.state.segment, SEGMENTS);
        retries += r.state.retries;
        gaps.push(...r.gapsS);
        inMemory += r.inMemory;
        parts.cli.push(r.cliS);
        parts.head.push(r.headS);
        parts.tail.push(r.tailS);
        parts.segments.push(r.segmentsS);
        p = r.seconds;
      }
    }
    assert.equal(
      finalModel(join(env.dir, 'pipe'), `p${round}`, steps),
      finalModel(join(env.dir, 'direct'), `d${round}`, steps),
      'bitwise equal',
    );
    directS.push(d);
    pipeS.push(p);
    ratios.push(p / d);
    process.stderr.write(
      `round ${round}: direct ${d.toFixed(1)} s, pipeline ${p.toFixed(1)} s, ratio ${(p / d).toFixed(3)}\n`,
    );
  }
  const fmt = (xs: number[], digits = 1) => {
    const s = stat(xs);
    return `${s.min.toFixed(digits)} | ${s.median.toFixed(digits)} | ${s.max.toFixed(digits)}`;
  };
  const r = stat(ratios);
  process.stdout.write(
    [
      '',
      `## Orchestration overhead (${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores, load average ${load0.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end)`,
      '',
      `Sticky segments: ${process.env.CKPT_STICKY_SEGMENTS === '0' ? 'off' : 'on'}. ${steps} steps of the small model (${SMALL_MODEL.join(' ')}), save every ${SAVE_EVERY}; pipeline: ${SEGMENTS} segments of ${segment} steps (~${SEGMENT_S} s each at the calibrated ${stepsPerS.toFixed(1)} steps/s); ${ROUNDS} rounds, alternating order; final weights bitwise equal in every round.`,
      '',
      '| contender | min s | median s | max s |',
      '|---|---|---|---|',
      `| one \`ckpt train\` process | ${fmt(directS)} |`,
      `| pipeline (start → closed) | ${fmt(pipeS)} |`,
      `| ratio pipeline / direct (per round) | ${fmt(ratios, 3)} |`,
      '',
      `Pipeline parts (median s per run): \`ckpt pipeline start\` ${stat(parts.cli).median.toFixed(2)}, workflow start → first segment ${stat(parts.head).median.toFixed(2)}, segments (activity time, summed) ${stat(parts.segments).median.toFixed(2)}, last segment → closed ${stat(parts.tail).median.toFixed(2)}.`,
      '',
      `Segment retries in the pipeline runs: ${retries}. Segments that continued in memory: ${inMemory} of ${ROUNDS * SEGMENTS}. ` +
        `Segment boundaries (one completed → the next started, from the history): ${gaps.length ? `${fmt(gaps, 2).replace(/ \| /g, ' / ')} s (min / median / max)` : 'none'}.`,
      '',
      `Goal ≤ 1.02×: ${r.median <= 1.02 ? 'met' : 'MISSED'} (median ${r.median.toFixed(3)}×; per-segment overhead ${((stat(pipeS).median - stat(directS).median) / SEGMENTS).toFixed(2)} s).`,
      '',
    ].join('\n'),
  );
});
