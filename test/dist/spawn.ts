/** Start the rank processes of a test job and collect what each reports. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';

const CHILD = join(__dirname, 'rank-child.ts');
const ROOT = join(__dirname, '..', '..');

export interface RankRun {
  rank: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  lines: Array<Record<string, unknown>>;
  stderr: string;
  /** Still running when the job's time limit hit, and killed: a hang or a dangling handle. */
  hung: boolean;
}

/** A port that was free a moment ago (bind to 0, read it, release it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface JobOptions {
  /** Extra environment per process (index = process, not necessarily rank). */
  env?: (i: number) => Record<string, string>;
  /** How many processes (default worldSize). */
  processes?: number;
  /** Kill everything still running after this long (default 60 s). */
  limitMs?: number;
  /** Called for every JSON line a process prints (e.g. to SIGKILL it at a chosen moment). */
  onLine?: (i: number, line: Record<string, unknown>, child: ChildProcess) => void;
}

export async function runJob(worldSize: number, scenario: string, o: JobOptions = {}): Promise<RankRun[]> {
  const port = await freePort();
  const count = o.processes ?? worldSize;
  const runs = Array.from({ length: count }, (_, i) => {
    const env = {
      ...process.env,
      RANK: String(i),
      WORLD_SIZE: String(worldSize),
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
      ...o.env?.(i),
    };
    const run: RankRun = {
      rank: Number(env.RANK),
      code: null,
      signal: null,
      lines: [],
      stderr: '',
      hung: false,
    };
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, scenario], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    child.stdout!.on('data', (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let line: Record<string, unknown>;
        try {
          line = JSON.parse(text) as Record<string, unknown>;
        } catch {
          line = { type: 'text', text };
        }
        run.lines.push(line);
        o.onLine?.(i, line, child);
      }
    });
    child.stderr!.on('data', (d) => (run.stderr += d));
    const done = new Promise<void>((resolve) =>
      child.on('exit', (code, signal) => {
        run.code = code;
        run.signal = signal;
        resolve();
      }),
    );
    return { run, child, done };
  });
  const timer = setTimeout(() => {
    for (const r of runs) {
      if (r.child.exitCode === null && r.child.signalCode === null) {
        r.run.hung = true;
        r.child.kill('SIGKILL');
      }
    }
  }, o.limitMs ?? 60_000);
  await Promise.all(runs.map((r) => r.done));
  clearTimeout(timer);
  return runs.map((r) => r.run);
}

export function linesOf(run: RankRun, type: string): Array<Record<string, unknown>> {
  return run.lines.filter((l) => l.type === type);
}

export function lineOf(run: RankRun, type: string): Record<string, unknown> {
  const l = run.lines.find((x) => x.type === type);
  if (!l)
    throw new Error(
      `rank ${run.rank} printed no '${type}' line (exit ${run.code ?? run.signal}): ${JSON.stringify(run.lines)}\n${run.stderr}`,
    );
  return l;
}

/** Every process exited by itself with code 0. */
export function assertClean(runs: RankRun[]): void {
  for (const r of runs) {
    if (r.hung || r.code !== 0) {
      throw new Error(
        `rank ${r.rank}: ${r.hung ? 'did not exit (hang or dangling handle)' : `exit ${r.code ?? r.signal}`}\n${JSON.stringify(r.lines)}\n${r.stderr}`,
      );
    }
  }
}
