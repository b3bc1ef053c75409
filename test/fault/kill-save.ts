/**
 * Campaign 1: SIGKILL during saveCheckpoint at random points, on the local store and on S3 (versitygw).
 * Each trial: commit step 10, start a child that saves step 20 and announces a random put (0 model, 1 meta,
 * 2 optimizer, 3 manifest) before it starts or halfway through its bytes; the parent SIGKILLs it then
 * (25 %: the child stops dead there) or after a random 0-40 ms delay (wherever the save has got to:
 * fsync, link, the directory fsync, an upload part, the conditional PUT of the manifest, or done).
 * Then: a torn checkpoint is a committed step that does not verify (goal 0); a resume is good when
 * findLastStep returns a step that loads with verification (goal all).
 * Usage: npm run fault:kill-save   (FAULT_SEED, FAULT_KILL_TRIALS per store, FAULT_KILL_STORES=local,s3)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  configureLogging,
  findLastStep,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
  verifyCheckpoint,
  type Store,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { Budget, describe, envInt, Examples, report, Rng, SEED, type Goal } from './lib';

const TRIALS = envInt('FAULT_KILL_TRIALS', 50);
const STORES = (process.env.FAULT_KILL_STORES ?? 'local,s3').split(',');
const budget = new Budget(envInt('FAULT_BUDGET_S', 480));
const rng = new Rng(SEED);
const CHILD = join(__dirname, 'kill-save-child.ts');

interface Outcome {
  out: string;
  err: string;
  signal: NodeJS.Signals | null;
  code: number | null;
}

function runAndKill(
  spec: string,
  put: number,
  phase: string,
  size: number,
  seed: number,
  delayMs: number | 'hang',
  env: NodeJS.ProcessEnv,
): Promise<Outcome> {
  return new Promise((resolve) => {
    const args = [
      spec,
      '20',
      String(put),
      phase,
      delayMs === 'hang' ? 'hang' : 'go',
      String(size),
      String(seed),
    ];
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let out = '';
    let err = '';
    let armed = false;
    const guard = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d) => {
      out += d;
      if (!armed && out.includes('AT ')) {
        armed = true;
        if (delayMs === 'hang') child.kill('SIGKILL');
        else setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code, signal) => {
      clearTimeout(guard);
      resolve({ out, err, signal, code });
    });
  });
}

interface Tally {
  trials: number;
  killed: number;
  finishedFirst: number;
  torn: number;
  resumeVerified: number;
  resumedAt20: number;
  other: number;
  points: Map<string, number>;
}

async function campaign(
  name: string,
  open: (i: number) => { dir: Store | string; spec: string },
  size: () => number,
  env: NodeJS.ProcessEnv,
  ex: Examples,
): Promise<Tally> {
  const t: Tally = {
    trials: 0,
    killed: 0,
    finishedFirst: 0,
    torn: 0,
    resumeVerified: 0,
    resumedAt20: 0,
    other: 0,
    points: new Map(),
  };
  for (let i = 0; i < TRIALS && !budget.spent; i++) {
    const { dir, spec } = open(i);
    const seed = rng.range(1, 1000);
    await saveCheckpoint(dir, 10, {
      model: tinyModel(seed, 1024),
      optimizer: tinyOptimizer(seed),
      meta: tinyMeta({ seed }),
    });
    const put = rng.int(4);
    const phase = rng.pick(['before', 'mid'] as const);
    const delay: number | 'hang' = rng.bool(0.25) ? 'hang' : rng.int(41);
    const label = `${name} #${i} put ${put} ${phase} ${delay === 'hang' ? 'hang' : `+${delay} ms`}`;
    const res = await runAndKill(spec, put, phase, size(), seed + 1, delay, env).catch((e) => ({
      out: '',
      err: String(e),
      signal: null,
      code: -1,
    }));
    t.trials++;
    if (res.signal === 'SIGKILL' && !res.out.includes('DONE')) {
      t.killed++;
      const where = /AT (\S+ \S+)/.exec(res.out)?.[1]?.replace(/\d{6}/, 'N') ?? '?';
      t.points.set(where, (t.points.get(where) ?? 0) + 1);
    } else if (res.out.includes('DONE')) t.finishedFirst++;
    else {
      t.other++;
      ex.add(`${name}: child neither killed nor done`, `${label}: code ${res.code} ${res.err.slice(0, 200)}`);
      continue;
    }
    try {
      const listed = await listCheckpoints(dir, { verify: true });
      for (const c of listed.filter((c) => c.committed && !c.verified)) {
        t.torn++;
        ex.add(`${name}: torn checkpoint`, `${label}: step ${c.step} ${JSON.stringify(c.problems)}`);
      }
      const last = await findLastStep(dir);
      const loaded = await loadCheckpoint(dir, last, { verify: true });
      if (loaded.step === last && (await verifyCheckpoint(dir, last)).ok) t.resumeVerified++;
      if (last === 20) t.resumedAt20++;
      if (res.out.includes('DONE') && last !== 20) ex.add(`${name}: finished save not found`, label);
    } catch (err) {
      ex.add(`${name}: resume failed`, `${label}: ${describe(err)}`);
    }
  }
  return t;
}

async function main() {
  configureLogging({ level: 'error' });
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  const root = mkdtempSync(join(tmpdir(), 'ckpt-fault-kill-'));
  const ex = new Examples();
  const results: Array<[string, Tally]> = [];
  let s3: S3TestServer | undefined;
  const notes: string[] = [];
  try {
    if (STORES.includes('local')) {
      results.push([
        'local',
        await campaign(
          'local',
          (i) => ({ dir: join(root, `l${i}`), spec: `local:${join(root, `l${i}`)}` }),
          () => 4096,
          {},
          ex,
        ),
      ]);
    }
    if (STORES.includes('s3')) {
      try {
        s3 = await startS3Server();
      } catch (err) {
        notes.push(`S3 not run: ${describe(err)}`);
      }
      if (s3) {
        const server = s3;
        const env = {
          FAULT_S3_ENDPOINT: server.endpoint,
          FAULT_S3_BUCKET: server.bucket,
          FAULT_S3_KEY: server.accessKeyId,
          FAULT_S3_SECRET: server.secretAccessKey,
        };
        // One trial in three saves a ~13 MB model: a multipart upload (5 MiB parts) instead of one PUT.
        results.push([
          `s3 (${server.kind})`,
          await campaign(
            's3',
            (i) => ({ dir: server.store(`k${i}`), spec: `s3:k${i}` }),
            () => (rng.int(3) === 0 ? 400_000 : 4096),
            env,
            ex,
          ),
        ]);
      }
    }
  } finally {
    await s3?.stop();
    rmSync(root, { recursive: true, force: true });
  }
  const goals: Goal[] = [];
  for (const [name, t] of results) {
    goals.push(
      {
        what: `${name}: trials (killed during save / finished before the kill)`,
        value: `${t.trials} (${t.killed} / ${t.finishedFirst})`,
        goal: `>= ${TRIALS}`,
        ok: t.trials >= TRIALS && t.other === 0,
      },
      { what: `${name}: torn checkpoints visible`, value: t.torn, goal: '0', ok: t.torn === 0 },
      {
        what: `${name}: resumes that picked a verified checkpoint`,
        value: `${t.resumeVerified}/${t.trials}`,
        goal: 'all',
        ok: t.resumeVerified === t.trials,
      },
      { what: `${name}: ... of which at the new step 20`, value: t.resumedAt20, goal: 'info', ok: true },
    );
    notes.push(
      `${name} kill points announced: ${[...t.points]
        .sort()
        .map(([p, n]) => `${p} ${n}`)
        .join(', ')}`,
    );
  }
  if (results.length < STORES.length)
    goals.push({
      what: 'stores run',
      value: results.map(([n]) => n).join(', '),
      goal: STORES.join(', '),
      ok: false,
    });
  report(`fault:kill-save (seed ${SEED}, ${budget.elapsedS.toFixed(1)} s)`, goals, [...notes, ...ex.lines()]);
}

main().catch((err) => {
  process.stderr.write(`campaign crashed: ${describe(err)}\n${(err as Error).stack ?? ''}\n`);
  process.exit(2);
});
