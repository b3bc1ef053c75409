/**
 * History scale: one pipeline of BENCH_SEGMENTS (default 10,000) short segments in the no-op training mode
 * (`ckpt pipeline start --noop`: each segment is a real activity round trip through the server and the
 * workers, but trains nothing), with the CLI's default continue-as-new settings. Counted: the pipeline
 * completes; the number of runs (continue-as-new chain) and the history length of every run (goal: each
 * under 10,000 events); the resident memory of the control worker (which runs the workflow) and of the
 * training worker, sampled through the run (goal: flat, i.e. the second half grows by less than 10 % over
 * the first half's peak).
 *
 * Usage: npm run bench:history   (BENCH_SEGMENTS, BENCH_SEGMENTS_PER_RUN to override continue-as-new)
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { PipelineState } from '../workflows/pipeline';
import { sleep, temporalEnv, type TemporalTestEnv, type TestWorker } from '../test/helpers/temporal';

const SEGMENTS = Number(process.env.BENCH_SEGMENTS ?? 10_000);
const PER_RUN = process.env.BENCH_SEGMENTS_PER_RUN;
const T = temporalEnv('bench-history');
let env: TemporalTestEnv;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

test('history scale', { timeout: 7_200_000 }, async () => {
  env = await T.start();
  const [control, trainer] = (await Promise.all([env.startWorker('control'), env.startWorker('train')])) as [
    TestWorker,
    TestWorker,
  ];
  const load0 = loadavg()[0]!;
  const t0 = Date.now();
  const args = [
    'pipeline',
    'start',
    '--root',
    join(env.dir, 'runs'),
    '--tag',
    'noop',
    '--noop',
    '--steps',
    String(SEGMENTS),
    '--segment-steps',
    '1',
    '--save-every',
    '1',
  ];
  if (PER_RUN) args.push('--segments-per-run', PER_RUN);
  const res = await env.ckpt(args);
  assert.equal(res.code, 0, res.stderr);
  const id = res.stdout.trim();
  const handle = env.client.workflow.getHandle(id);
  const samples: Array<{ s: number; segment: number; control: number; train: number }> = [];
  for (;;) {
    const d = await handle.describe();
    let segment = -1;
    if (d.status.name === 'RUNNING') {
      try {
        segment = ((await handle.query('status')) as PipelineState).segment;
      } catch {
        // between runs of the chain: the query lands on the next sample
      }
    }
    samples.push({
      s: (Date.now() - t0) / 1000,
      segment,
      control: rssMiB(control.pid),
      train: rssMiB(trainer.pid),
    });
    if (samples.length % 10 === 0) {
      const last = samples.at(-1)!;
      process.stderr.write(
        `${last.s.toFixed(0)} s: segment ${last.segment}, control ${last.control.toFixed(0)} MiB, train ${last.train.toFixed(0)} MiB\n`,
      );
    }
    if (d.status.name !== 'RUNNING') break;
    await sleep(2000);
  }
  const seconds = (Date.now() - t0) / 1000;
  const state = (await handle.result()) as PipelineState;
  assert.equal(state.state, 'completed');
  assert.equal(state.step, SEGMENTS);

  // Every run of the chain (continue-as-new keeps the workflow id).
  const runs: Array<{ runId: string; events: number; status: string }> = [];
  for await (const w of env.client.workflow.list({ query: `WorkflowId = "${id}"` })) {
    runs.push({ runId: w.runId, events: w.historyLength, status: w.status.name });
  }
  const events = runs.map((r) => r.events);
  const maxEvents = Math.max(...events);
  const half = Math.floor(samples.length / 2);
  const peak = (xs: number[]) => Math.max(...xs.filter(Number.isFinite));
  const mem = (key: 'control' | 'train') => {
    const first = peak(samples.slice(0, half).map((x) => x[key]));
    const second = peak(samples.slice(half).map((x) => x[key]));
    return { start: samples[0]![key], first, second, end: samples.at(-1)![key], growth: second / first - 1 };
  };
  const c = mem('control');
  const t = mem('train');
  const flat = c.growth < 0.1 && t.growth < 0.1;
  process.stdout.write(
    [
      '',
      `## History scale (${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores, load average ${load0.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end)`,
      '',
      `One pipeline of ${SEGMENTS} no-op segments (\`ckpt pipeline start --noop --steps ${SEGMENTS} --segment-steps 1\`${PER_RUN ? ` --segments-per-run ${PER_RUN}` : ''}), a control and a training worker: completed in ${seconds.toFixed(0)} s (${(SEGMENTS / seconds).toFixed(1)} segments/s), state ${state.state}, step ${state.step}, runs counted by the workflow ${state.runs}.`,
      '',
      '| measure | value | goal |',
      '|---|---|---|',
      `| runs in the continue-as-new chain | ${runs.length} (all ${[...new Set(runs.map((r) => r.status))].join('/')}) | |`,
      `| history events per run, min / median / max | ${Math.min(...events)} / ${events.sort((a, b) => a - b)[Math.floor(events.length / 2)]} / ${maxEvents} | every run < 10,000: ${maxEvents < 10_000 ? 'met' : 'MISSED'} |`,
      `| control worker RSS MiB: first sample / peak 1st half / peak 2nd half / last | ${c.start.toFixed(0)} / ${c.first.toFixed(0)} / ${c.second.toFixed(0)} / ${c.end.toFixed(0)} (${(c.growth * 100).toFixed(1)} %) | 2nd-half peak < 1.1 × 1st: ${c.growth < 0.1 ? 'met' : 'MISSED'} |`,
      `| training worker RSS MiB: first sample / peak 1st half / peak 2nd half / last | ${t.start.toFixed(0)} / ${t.first.toFixed(0)} / ${t.second.toFixed(0)} / ${t.end.toFixed(0)} (${(t.growth * 100).toFixed(1)} %) | 2nd-half peak < 1.1 × 1st: ${t.growth < 0.1 ? 'met' : 'MISSED'} |`,
      '',
    ].join('\n'),
  );
  assert.ok(maxEvents < 10_000, `a run has ${maxEvents} events`);
  assert.ok(runs.length === state.runs, `runs listed ${runs.length}, counted ${state.runs}`);
  if (!flat) process.stdout.write('worker memory was not flat (see the table)\n');
});
