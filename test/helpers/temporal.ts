/**
 * A real Temporal environment for tests: the Temporal CLI's dev server (never a mock or the time-skipping
 * test server), workers as child processes (`ckpt worker --role ...`, exactly what an operator runs), and a
 * client. Every test file gets its own server, its own task queues and its own temp directory.
 *
 * Call `temporalEnv(name)` at the top level of a test file: it registers the cleanup (workers, servers,
 * client, temp dir) as a root `after()` hook at once, so everything is torn down even when `start()` or a
 * test fails half-way. A process `exit` hook SIGKILLs whatever is left if the test process dies anyway.
 *
 * Settings that make failures quick to notice: a 3 s heartbeat timeout and retries from 200 ms to 2 s.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { promisify } from 'node:util';
import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { optionalTsToMs } from '@temporalio/common/lib/time';
import { ensureTemporalCli, freePort, startDevServer, type DevServer } from '../../infra/temporal';
import { connectClient, workflowSettings } from '../../cli/temporal-client';
import { loadConfig, type TemporalSettings } from '../../temporal.config';
import type { WorkflowSettings } from '../../workflows/options';
import { ROOT, type CliResult } from './cli';

const BIN = join(ROOT, 'bin', 'ckpt.js');

/** The flags every test model uses: the smallest model that still trains. */
export const SMALL_MODEL = ['--depth', '1', '--n-embd', '32', '--seq-len', '32', '--batch', '4'];

/** `ckpt pipeline start` of a campaign's run: `trainFlags` in segments of `segmentSteps`, then `extra`. */
export const pipelineStartArgs = (
  root: string,
  tag: string,
  trainFlags: string[],
  segmentSteps: number,
  extra: string[] = [],
): string[] => [
  'pipeline',
  'start',
  '--root',
  root,
  '--tag',
  tag,
  ...trainFlags,
  '--segment-steps',
  String(segmentSteps),
  ...extra,
];

/** `ckpt train` flags of the campaigns' runs: the small model, seed 7, `steps` steps, a save every `saveEvery`. */
export const smallTrainFlags = (steps: number, saveEvery: number): string[] => [
  ...SMALL_MODEL,
  '--seed',
  '7',
  '--steps',
  String(steps),
  '--save-every',
  String(saveEvery),
];

export type Role = 'train' | 'control' | 'all';

export interface TestWorker {
  role: Role;
  pid: number;
  /** The identity the worker reports to the server (`<role>-<pid>@<hostname>`, see workerIdentity). */
  identity: string;
  process: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<void>;
  /** The last 64 KiB of its stderr (the SDK's and the activities' logs). */
  log(): string;
  /** SIGKILL (a crash) and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM (graceful shutdown), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface TemporalTestEnv {
  /** Fresh temp directory of this test file (removed at the end). */
  dir: string;
  server: DevServer;
  address: string;
  taskQueues: { train: string; control: string };
  /** Environment for child processes (workers, the CLI): the test runner's minus CKPT_*, TEMPORAL_*, AWS_*, NODE_TEST* and the rank variables, plus ours. */
  env: NodeJS.ProcessEnv;
  temporal: TemporalSettings;
  /** What the CLI hands to workflows (task queues, timeouts, retries). */
  settings: WorkflowSettings;
  client: Client;
  startWorker(role: Role, options?: StartWorkerOptions): Promise<TestWorker>;
  /** Stop the server and start it again on the same port (and database file, when there is one). */
  restartServer(): Promise<void>;
  /** `ckpt ARGS` in a child process with this environment; killed after `timeoutMs`. */
  ckpt(args: string[], options?: { timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<CliResult>;
}

export interface StartWorkerOptions {
  readyTimeoutMs?: number;
  /** Extra `ckpt worker` flags (e.g. --metrics-port). */
  args?: string[];
  /** Extra environment of this worker only. */
  env?: NodeJS.ProcessEnv;
}

export interface TemporalEnvOptions {
  /** Keep the server's state in a SQLite file so that it survives restartServer(). */
  persistent?: boolean;
  /** Extra environment for workers and the CLI. */
  env?: NodeJS.ProcessEnv;
}

/** Environment for a child: no setting of the caller's shell or of the test runner leaks in. */
export function baseEnv(): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (
      /^(CKPT_|TEMPORAL_|AWS_|NODE_TEST)/.test(k) ||
      ['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'].includes(k)
    )
      continue;
    out[k] = v;
  }
  return out;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

function exitedPromise(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Poll `check` every `intervalMs` until it returns something other than undefined/false; fails with
 * `what` (and the last value seen) after `timeoutMs`.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 60_000, intervalMs = 250 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as T;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`,
      );
    }
    await sleep(intervalMs);
  }
}

/** sha256 of a file, hex. */
export function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Declare a Temporal environment for this test file; `start()` it in a `before()` hook. */
export function temporalEnv(
  name: string,
  options: TemporalEnvOptions = {},
): { start(): Promise<TemporalTestEnv>; env(): TemporalTestEnv } {
  const dir = mkdtempSync(join(tmpdir(), `ckpt-temporal-${name}-`));
  const workers: TestWorker[] = [];
  let server: DevServer | undefined;
  let client: Client | undefined;
  let started: TemporalTestEnv | undefined;

  after(async () => {
    // Workers first (they would otherwise retry against a dying server), then the client and the server.
    await Promise.allSettled(workers.map((w) => w.stop(3000)));
    await client?.connection.close().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    if (server) live.delete(server.process);
    rmSync(dir, { recursive: true, force: true });
  });

  const start = async (): Promise<TemporalTestEnv> => {
    const suffix = `${name}-${randomBytes(3).toString('hex')}`;
    const port = await freePort();
    const uiPort = await freePort();
    const db = options.persistent ? join(dir, 'temporal.db') : undefined;
    server = await startDevServer({ port, uiPort, db });
    live.add(server.process);
    const address = server.address;
    const taskQueues = { train: `ckpt-train-${suffix}`, control: `ckpt-control-${suffix}` };
    const env: NodeJS.ProcessEnv = {
      ...baseEnv(),
      TEMPORAL_ADDRESS: address,
      TEMPORAL_NAMESPACE: 'default',
      CKPT_TASK_QUEUE_TRAIN: taskQueues.train,
      CKPT_TASK_QUEUE_CONTROL: taskQueues.control,
      CKPT_HEARTBEAT_TIMEOUT: '3s',
      CKPT_RETRY_INITIAL: '200ms',
      CKPT_RETRY_MAX: '2s',
      CKPT_UI_ADDRESS: server.uiAddress,
      // Tests keep their checkpoints in temp folders (their own or this file's).
      CKPT_ALLOWED_ROOTS: tmpdir(),
      ...options.env,
    };
    const temporal = loadConfig(env).temporal;
    client = await connectClient(temporal);

    const startWorker = async (
      role: Role,
      { readyTimeoutMs = 90_000, args = [], env: extraEnv = {} }: StartWorkerOptions = {},
    ): Promise<TestWorker> => {
      const child = spawn(process.execPath, [BIN, 'worker', '--role', role, ...args], {
        cwd: ROOT,
        env: { ...env, ...extraEnv },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      live.add(child);
      const exited = exitedPromise(child).then(() => void live.delete(child));
      let log = '';
      let startup = '';
      let runningQueues = 0;
      const expected = role === 'all' ? 2 : 1;
      let onReady: (() => void) | undefined;
      // The SDK logs "Worker state changed" with state RUNNING once per task queue when its pollers start
      // (role all: two, train or control: one), through the worker's logger: one line, JSON or text.
      child.stderr!.on('data', (d: Buffer) => {
        const text = d.toString();
        log = (log + text).slice(-65536);
        if (runningQueues >= expected) return;
        startup += text;
        runningQueues = startup
          .split('\n')
          .filter((line) => line.includes('Worker state changed') && /\bRUNNING\b/.test(line)).length;
        if (runningQueues >= expected) onReady?.();
      });
      const worker: TestWorker = {
        role,
        pid: child.pid!,
        identity: `${role}-${child.pid}@${hostname()}`,
        process: child,
        exited,
        log: () => log,
        async kill() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          await withTimeout(exited, 10_000, `SIGKILL of worker ${child.pid}`);
        },
        async stop(graceMs = 10_000) {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          try {
            await withTimeout(exited, graceMs, `SIGTERM of worker ${child.pid}`);
          } catch {
            child.kill('SIGKILL');
            await withTimeout(exited, 10_000, `SIGKILL of worker ${child.pid}`);
          }
        },
      };
      workers.push(worker);
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          onReady = resolve;
          if (runningQueues >= expected) resolve();
          void exited.then(() =>
            reject(new Error(`worker (${role}) exited before it was ready:\n${log.slice(-4000)}`)),
          );
        }),
        readyTimeoutMs,
        `worker (${role}) start-up`,
      ).catch((err: Error) => {
        throw new Error(`${err.message}\n${log.slice(-4000)}`);
      });
      return worker;
    };

    const restartServer = async () => {
      await server!.stop();
      live.delete(server!.process);
      server = await startDevServer({ port, uiPort, db });
      live.add(server.process);
      started!.server = server;
    };

    const ckpt = (
      args: string[],
      opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
    ): Promise<CliResult> =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...env, ...opts.env } });
        live.add(child);
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
        child.on('error', reject);
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          live.delete(child);
          if (signal === 'SIGKILL') stderr += `\n[killed after ${opts.timeoutMs ?? 120_000} ms]`;
          resolve({ code: code ?? -1, stdout, stderr });
        });
      });

    started = {
      dir,
      server,
      address,
      taskQueues,
      env,
      temporal,
      settings: workflowSettings(temporal),
      client,
      startWorker,
      restartServer,
      ckpt,
    };
    return started;
  };

  return {
    start,
    env() {
      if (!started) throw new Error('temporalEnv: start() has not run (or failed)');
      return started;
    },
  };
}

export interface PendingSegment {
  activityType: string;
  attempt: number;
  state: string;
  /** Identity (`<role>-<pid>@<hostname>`) of the worker that started the current attempt. */
  worker: string;
  /** Step of the last heartbeat the server has (possibly from an earlier attempt), or null. */
  heartbeatStep: number | null;
  lastHeartbeatMs?: number;
  lastStartedMs?: number;
  /** A heartbeat of the current attempt has arrived (not one left over from the attempt before). */
  heartbeatFromThisAttempt: boolean;
}

/** The workflow's pending activities as the server reports them in describe(). */
export async function pendingActivities(client: Client, workflowId: string): Promise<PendingSegment[]> {
  const description = await client.workflow.getHandle(workflowId).describe();
  return (description.raw.pendingActivities ?? []).map((a) => {
    const payload = a.heartbeatDetails?.payloads?.[0];
    const details = payload
      ? (defaultPayloadConverter.fromPayload(payload as never) as { step?: number })
      : undefined;
    const lastHeartbeatMs = optionalTsToMs(a.lastHeartbeatTime as never);
    const lastStartedMs = optionalTsToMs(a.lastStartedTime as never);
    return {
      activityType: a.activityType?.name ?? '',
      attempt: a.attempt ?? 1,
      state: String(a.state ?? ''),
      worker: a.lastWorkerIdentity ?? '',
      heartbeatStep: typeof details?.step === 'number' ? details.step : null,
      lastHeartbeatMs,
      lastStartedMs,
      heartbeatFromThisAttempt:
        lastHeartbeatMs !== undefined && lastStartedMs !== undefined && lastHeartbeatMs >= lastStartedMs,
    };
  });
}

/** The `temporal` CLI against the test server's default namespace (terminate, cancel, reset...). */
export async function temporalCli(env: { address: string }, args: string[]): Promise<void> {
  await promisify(execFile)(ensureTemporalCli(), [
    ...args,
    '--address',
    env.address,
    '--namespace',
    'default',
  ]);
}
