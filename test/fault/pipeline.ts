/**
 * Campaigns 6 and 7: whole pipelines under faults, against a real Temporal dev server (state in a SQLite
 * file, so it can be restarted), real `ckpt worker` processes and, for the S3 runs, a real versitygw.
 *
 *   kill     FAULT_PIPELINE_KILLS runs (default 10): a training worker SIGKILLed at a random moment of the
 *            run (uniform over the reference run's training time, counted from the first segment's start:
 *            while the child loads, mid-step, mid-save, between segments); a fresh training worker is
 *            started at once (the replaced node). Counted: the run completes, its final model and optimizer
 *            files are bitwise equal to an uninterrupted `ckpt train`, and, for kills that land inside a
 *            segment, the kill-to-resume latency: SIGKILL → the server starts the retried attempt, and
 *            SIGKILL → the first checkpoint committed past the resume point (≤ SAVE_EVERY steps of training
 *            included).
 *   restart  FAULT_PIPELINE_RESTARTS runs (default 3): the Temporal server stopped at a random moment
 *            (SIGTERM in odd runs, SIGKILL in even ones) and started again on the same port and database
 *            after a random 0.5-3 s outage.
 *   s3       FAULT_PIPELINE_S3_KILLS runs (default 3) on an s3:// root: the S3 server SIGKILLed while a PUT
 *            (an upload of a checkpoint file) is in flight, as seen by a TCP proxy between the training
 *            child and the server, and started again after a random 0.5-3 s outage.
 * Every run: completes, final files bitwise equal to the reference, every checkpoint committed before the
 * fault still verifies at the end (nothing lost), no checkpoint is left torn.
 *
 * Usage: npm run fault:pipeline   (FAULT_SEED, FAULT_PIPELINE_PHASES=kill,restart,s3, the counts above;
 *        FAULT_HEARTBEAT_TIMEOUT: the workers' heartbeat timeout, default the tests' 3s; FAULT_STICKY=0: no
 *        sticky segments)
 * With sticky segments a run's first segment is on the shared queue and its later ones on the queue of the
 * worker that keeps the state: kill → resume is reported for both.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { committedSteps, configureS3, openStore, verifyCheckpoint } from '../../checkpoint';
import type { PipelineState } from '../../workflows/pipeline';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import {
  pendingActivities,
  pipelineStartArgs,
  sleep,
  smallTrainFlags,
  temporalEnv,
  waitFor,
  type TemporalTestEnv,
  type TestWorker,
} from '../helpers/temporal';
import { childPids, pidAlive } from '../helpers/process';
import { envInt, report, Rng, runGoals, SEED, zeroGoal, type Goal } from './lib';

const KILLS = envInt('FAULT_PIPELINE_KILLS', 10);
const RESTARTS = envInt('FAULT_PIPELINE_RESTARTS', 3);
const S3_KILLS = envInt('FAULT_PIPELINE_S3_KILLS', 3);
const PHASES = (process.env.FAULT_PIPELINE_PHASES ?? 'kill,restart,s3').split(',');
const STEPS = 600;
const SEGMENT = 200;
const SAVE_EVERY = 20;
const TRAIN_FLAGS = smallTrainFlags(STEPS, SAVE_EVERY);
const rng = new Rng(SEED);

const extraEnv: NodeJS.ProcessEnv = {
  ...(process.env.FAULT_HEARTBEAT_TIMEOUT
    ? { CKPT_HEARTBEAT_TIMEOUT: process.env.FAULT_HEARTBEAT_TIMEOUT }
    : {}),
  CKPT_STICKY_SEGMENTS: process.env.FAULT_STICKY ?? '1',
};
const T = temporalEnv('fault-pipeline', { persistent: true, env: extraEnv });
let env: TemporalTestEnv;
let s3: S3TestServer | undefined;
let proxy: PutProxy | undefined;

const pad = (step: number) => String(step).padStart(6, '0');
const FINAL = [`model_${pad(STEPS)}.safetensors`, `optim_${pad(STEPS)}_rank0.safetensors`];

async function fileHashes(dir: string): Promise<string[]> {
  const store = openStore(dir);
  return Promise.all(
    FINAL.map(async (f) =>
      createHash('sha256')
        .update(await store.read(f))
        .digest('hex'),
    ),
  );
}

async function committed(dir: string): Promise<number[]> {
  try {
    return await committedSteps(openStore(dir));
  } catch {
    return []; // the S3 server may be down for a moment
  }
}

/** Checkpoints that are committed but do not verify (torn), and which of `before` are gone or broken. */
async function audit(dir: string, before: number[]): Promise<{ torn: number[]; lost: number[] }> {
  const store = openStore(dir);
  const steps = await committedSteps(store);
  const torn: number[] = [];
  for (const step of steps) if (!(await verifyCheckpoint(store, step)).ok) torn.push(step);
  const lost = before.filter((s) => !steps.includes(s) || torn.includes(s));
  return { torn, lost };
}

const aliveWorker = (w: TestWorker) => w.process.exitCode === null && w.process.signalCode === null;

async function startPipeline(root: string, tag: string): Promise<{ id: string; dir: string }> {
  const res = await env.ckpt(pipelineStartArgs(root, tag, TRAIN_FLAGS, SEGMENT));
  assert.equal(res.code, 0, res.stderr);
  return { id: res.stdout.trim(), dir: `${root}/base_checkpoints/${tag}` };
}

/** The pipeline's result once it has closed; rejects with its failure when it failed. */
async function pipelineResult(id: string, timeoutMs = 300_000): Promise<PipelineState> {
  const handle = env.client.workflow.getHandle(id);
  await waitFor(`pipeline ${id} to end`, async () => (await handle.describe()).status.name !== 'RUNNING', {
    timeoutMs,
    intervalMs: 250,
  });
  return (await handle.result()) as PipelineState;
}

/** Wait until the first segment is running on a worker; returns the time it was seen. */
async function firstSegmentStarted(id: string): Promise<number> {
  await waitFor(
    'the first segment to start',
    async () =>
      (await pendingActivities(env.client, id)).find(
        (a) => a.activityType === 'trainSegment' && a.worker !== '',
      ),
    { timeoutMs: 120_000, intervalMs: 50 },
  );
  return Date.now();
}

/**
 * A TCP proxy between the training child and the S3 server. When armed, the next request that starts with
 * `PUT` and carries a body of at least `minBytes` is forwarded in part (its first chunk), then `onPut`
 * runs: the server dies with the upload in flight.
 */
interface PutProxy {
  endpoint: string;
  arm(minBytes: number, onPut: (path: string) => void): void;
  close(): Promise<void>;
}

async function startPutProxy(backendPort: number): Promise<PutProxy> {
  let armed: { minBytes: number; onPut: (path: string) => void } | null = null;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    const upstream = connect(backendPort, '127.0.0.1');
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    upstream.pipe(client);
    client.on('data', (chunk: Buffer) => {
      const trigger = armed;
      if (trigger) {
        const head = chunk.subarray(0, 8192).toString('latin1');
        const m = /^PUT (\S+) HTTP\/1\.1\r\n/.exec(head);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (m && length >= trigger.minBytes) {
          armed = null;
          upstream.write(chunk);
          trigger.onPut(m[1]!);
          return;
        }
      }
      if (!upstream.write(chunk)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    arm(minBytes, onPut) {
      armed = { minBytes, onPut };
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

const median = (xs: number[]) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const stats = (xs: number[]) =>
  xs.length === 0
    ? '-'
    : `${Math.min(...xs).toFixed(1)} / ${median(xs).toFixed(1)} / ${Math.max(...xs).toFixed(1)} s`;

interface RunRecord {
  phase: string;
  run: number;
  completed: boolean;
  bitwise: boolean;
  torn: number;
  lost: number;
  retries: number;
  note: string;
}

test('pipeline fault campaign', { timeout: 3_600_000 }, async () => {
  const t0 = Date.now();
  if (PHASES.includes('s3')) {
    s3 = await startS3Server();
    proxy = await startPutProxy(Number(new URL(s3.endpoint).port));
    Object.assign(extraEnv, s3.env(), {
      AWS_ENDPOINT_URL: proxy.endpoint,
      CKPT_ALLOWED_ROOTS: `${tmpdir()},s3://${s3.bucket}`,
    });
    configureS3(s3.options({ endpoint: proxy.endpoint }));
  }
  env = await T.start();
  const refStart = Date.now();
  const refRun = await env.ckpt(['train', '--root', join(env.dir, 'ref'), '--tag', 'ref', ...TRAIN_FLAGS], {
    timeoutMs: 600_000,
  });
  const refSeconds = (Date.now() - refStart) / 1000;
  assert.equal(refRun.code, 0, refRun.stderr);
  const reference = await fileHashes(join(env.dir, 'ref', 'base_checkpoints', 'ref'));
  process.stderr.write(`reference: ${STEPS} steps in ${refSeconds.toFixed(1)} s (one ckpt train)\n`);

  const trainers: TestWorker[] = [];
  await Promise.all([
    env.startWorker('control'),
    env.startWorker('train').then((w) => trainers.push(w)),
    env.startWorker('train').then((w) => trainers.push(w)),
  ]);
  const records: RunRecord[] = [];
  const toAttempt: number[] = [];
  const toCheckpoint: number[] = [];
  // The same, for kills in a run's later segments (sticky: on the killed worker's own queue).
  const laterToAttempt: number[] = [];
  const laterToCheckpoint: number[] = [];
  const killedWhere = new Map<string, number>();
  let orphansLeft = 0;

  const finish = async (
    phase: string,
    run: number,
    id: string,
    dir: string,
    before: number[],
    note: string,
  ) => {
    let state: PipelineState | undefined;
    let error = '';
    try {
      state = await pipelineResult(id);
    } catch (err) {
      const cause = (err as { cause?: { cause?: Error } }).cause?.cause;
      error = `${(err as Error).message}${cause ? `: ${cause.message}` : ''}`;
    }
    const bitwise =
      state?.state === 'completed' ? (await fileHashes(dir)).every((h, i) => h === reference[i]) : false;
    const { torn, lost } = await audit(dir, before);
    const rec: RunRecord = {
      phase,
      run,
      completed: state?.state === 'completed' && state.step === STEPS,
      bitwise,
      torn: torn.length,
      lost: lost.length,
      retries: state?.retries ?? -1,
      note: error ? `${note}; ${error}` : note,
    };
    records.push(rec);
    process.stderr.write(`${phase} ${run}: ${JSON.stringify(rec)}\n`);
  };

  // --- training worker killed at a random moment -------------------------------------------------------
  if (PHASES.includes('kill')) {
    for (let run = 1; run <= KILLS; run++) {
      const { id, dir } = await startPipeline(join(env.dir, 'runs'), `kill${run}`);
      const started = await firstSegmentStarted(id);
      const delayMs = Math.round(rng.next() * refSeconds * 1000);
      await sleep(Math.max(0, started + delayMs - Date.now()));
      const segment = (await pendingActivities(env.client, id)).find(
        (a) => a.activityType === 'trainSegment' && a.worker !== '',
      );
      const live = trainers.filter(aliveWorker);
      const victim = live.find((w) => w.identity === segment?.worker) ?? rng.pick(live);
      const before = await committed(dir);
      // A worker's children: the training child of its segment and, between commands, its warm standby.
      const children = childPids(victim.pid);
      const killedAt = Date.now();
      await victim.kill();
      // The replaced node: a fresh training worker joins while the retry runs on the survivor.
      const replacement = env.startWorker('train').then((w) => trainers.push(w));
      const where = !segment
        ? 'between segments'
        : `in a segment (step ≥ ${before.at(-1) ?? 0}, ${children.length} child processes)`;
      killedWhere.set(where.split(' (')[0]!, (killedWhere.get(where.split(' (')[0]!) ?? 0) + 1);
      let note = `kill at +${(delayMs / 1000).toFixed(1)} s, ${where}`;
      if (segment && segment.worker === victim.identity) {
        // The resume point is what is committed once the killed worker's children are gone (a child can
        // still commit a save in flight in the moment before it notices its worker died).
        const orphans = children;
        await waitFor("the killed worker's children to exit", () => orphans.every((p) => !pidAlive(p)), {
          timeoutMs: 20_000,
          intervalMs: 20,
        }).catch(() => {
          orphansLeft += orphans.filter(pidAlive).length;
          for (const p of orphans) process.kill(p, 'SIGKILL');
        });
        const resumePoint = (await committed(dir)).at(-1) ?? 0;
        const timings = await Promise.all([
          waitFor(
            'the retried attempt to start',
            async () => {
              // The retry on the shared queue: attempt 2+ of the segment, or (a sticky segment's single
              // attempt having timed out) the segment scheduled again, attempt 1, on a survivor.
              const a = (await pendingActivities(env.client, id)).find(
                (p) => p.activityType === 'trainSegment' && p.worker !== '' && p.worker !== victim.identity,
              );
              return a?.lastStartedMs && a.lastStartedMs >= killedAt
                ? (a.lastStartedMs - killedAt) / 1000
                : undefined;
            },
            { timeoutMs: 120_000, intervalMs: 50 },
          ).catch(() => NaN),
          waitFor(
            'a checkpoint past the resume point',
            async () => ((await committed(dir)).at(-1) ?? 0) > resumePoint && (Date.now() - killedAt) / 1000,
            {
              timeoutMs: 120_000,
              intervalMs: 50,
            },
          ).catch(() => NaN),
        ]);
        const later = (before.at(-1) ?? 0) >= SEGMENT;
        if (Number.isFinite(timings[0])) (later ? laterToAttempt : toAttempt).push(timings[0]);
        if (Number.isFinite(timings[1])) (later ? laterToCheckpoint : toCheckpoint).push(timings[1]);
        if (later) note += ' (a later segment)';
        note += `; retry started +${timings[0].toFixed(1)} s, first new checkpoint +${timings[1].toFixed(1)} s`;
      }
      await replacement;
      await finish('kill', run, id, dir, before, note);
    }
  }

  // --- Temporal server restarted -------------------------------------------------------------------------
  if (PHASES.includes('restart')) {
    for (let run = 1; run <= RESTARTS; run++) {
      const { id, dir } = await startPipeline(join(env.dir, 'runs'), `restart${run}`);
      const started = await firstSegmentStarted(id);
      const delayMs = Math.round(rng.next() * refSeconds * 1000);
      await sleep(Math.max(0, started + delayMs - Date.now()));
      const before = await committed(dir);
      const outageMs = 500 + rng.int(2500);
      const t = Date.now();
      const how = run % 2 === 1 ? 'SIGTERM' : 'SIGKILL';
      if (how === 'SIGKILL') {
        const proc = env.server.process;
        const gone = new Promise((resolve) => proc.once('exit', resolve));
        proc.kill('SIGKILL');
        await gone;
      }
      await env.server.stop();
      await sleep(outageMs);
      await env.restartServer();
      const note = `${how} of the server at +${(delayMs / 1000).toFixed(1)} s, outage ${outageMs} ms (down to up ${((Date.now() - t) / 1000).toFixed(1)} s)`;
      await finish('restart', run, id, dir, before, note);
    }
  }

  // --- S3 server killed mid-upload ---------------------------------------------------------------------
  if (PHASES.includes('s3') && s3 && proxy) {
    const server = s3;
    for (let run = 1; run <= S3_KILLS; run++) {
      const { id, dir } = await startPipeline(`s3://${server.bucket}/runs`, `s3kill${run}`);
      const started = await firstSegmentStarted(id);
      const delayMs = Math.round(rng.next() * refSeconds * 0.8 * 1000);
      await sleep(Math.max(0, started + delayMs - Date.now()));
      const before = await committed(dir);
      let killedPut = '';
      const killed = new Promise<void>((resolve) =>
        proxy!.arm(16 * 1024, (path) => {
          killedPut = path;
          void server.kill().then(resolve);
        }),
      );
      const outcome = await Promise.race([
        killed.then(() => 'killed'),
        pipelineResult(id).then(() => 'ended'),
      ]);
      if (outcome !== 'killed') {
        proxy.arm(Number.MAX_SAFE_INTEGER, () => undefined);
        records.push({
          phase: 's3',
          run,
          completed: false,
          bitwise: false,
          torn: 0,
          lost: 0,
          retries: 0,
          note: 'no upload after the armed moment: the run ended first',
        });
        continue;
      }
      const outageMs = 500 + rng.int(2500);
      await sleep(outageMs);
      await server.restart();
      await finish(
        's3',
        run,
        id,
        dir,
        before,
        `killed during PUT ${killedPut.replace(/\?.*/, '')} at +${(delayMs / 1000).toFixed(1)} s, outage ${outageMs} ms`,
      );
    }
  }

  // --- summary -------------------------------------------------------------------------------------------
  const goals: Goal[] = [];
  for (const phase of ['kill', 'restart', 's3'].filter((p) => PHASES.includes(p))) {
    const rs = records.filter((r) => r.phase === phase);
    const want = phase === 'kill' ? KILLS : phase === 'restart' ? RESTARTS : S3_KILLS;
    goals.push(
      ...runGoals(phase, rs, want, [
        zeroGoal(
          `${phase}: checkpoints lost`,
          rs.reduce((a, r) => a + r.lost, 0),
        ),
      ]),
    );
  }
  if (PHASES.includes('kill')) {
    goals.push(
      {
        what: 'kill: children of a killed worker still running 20 s later',
        value: orphansLeft,
        goal: '0',
        ok: orphansLeft === 0,
      },
      {
        what: 'kill: where the kills landed',
        value: [...killedWhere].map(([k, v]) => `${k} ${v}`).join(', '),
        goal: '(counted)',
        ok: true,
      },
      {
        what: 'kill → retry started, all segments (min/median/max)',
        value: `${stats([...toAttempt, ...laterToAttempt])} (n=${toAttempt.length + laterToAttempt.length})`,
        goal: 'n ≥ 5',
        ok: toAttempt.length + laterToAttempt.length >= 5,
      },
      {
        what: 'kill → first new checkpoint, all segments (min/median/max)',
        value: `${stats([...toCheckpoint, ...laterToCheckpoint])} (n=${toCheckpoint.length + laterToCheckpoint.length})`,
        goal: 'n ≥ 5',
        ok: toCheckpoint.length + laterToCheckpoint.length >= 5,
      },
      {
        what: 'kill → retry started: first segment | later segments',
        value: `${stats(toAttempt)} (n=${toAttempt.length}) | ${stats(laterToAttempt)} (n=${laterToAttempt.length})`,
        goal: '(counted)',
        ok: true,
      },
      {
        what: 'kill → first new checkpoint: first segment | later segments',
        value: `${stats(toCheckpoint)} (n=${toCheckpoint.length}) | ${stats(laterToCheckpoint)} (n=${laterToCheckpoint.length})`,
        goal: '(counted)',
        ok: true,
      },
    );
  }
  report(`Pipeline fault campaign (seed ${SEED}, ${((Date.now() - t0) / 1000).toFixed(0)} s)`, goals, [
    `reference: ${STEPS} steps, segments of ${SEGMENT}, save every ${SAVE_EVERY}, small model; one ckpt train took ${refSeconds.toFixed(1)} s`,
    `heartbeat timeout ${env.env.CKPT_HEARTBEAT_TIMEOUT}, sticky segments ${env.env.CKPT_STICKY_SEGMENTS === '0' ? 'off' : 'on'}, retry ${env.env.CKPT_RETRY_INITIAL}..${env.env.CKPT_RETRY_MAX}`,
    ...records.map(
      (r) =>
        `- ${r.phase} ${r.run}: ${r.completed ? 'completed' : 'NOT completed'}, ${r.bitwise ? 'bitwise equal' : 'NOT equal'}, retries ${r.retries}, torn ${r.torn}, lost ${r.lost}; ${r.note}`,
    ),
  ]);
  await proxy?.close();
  await s3?.stop();
  assert.equal(process.exitCode ?? 0, 0, 'a goal was missed (see the table)');
});
