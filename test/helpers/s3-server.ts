/**
 * A real S3 server for tests: versitygw (posix backend in a temp dir) on 127.0.0.1 and a free port, with
 * freshly generated root credentials and one bucket. Falls back to moto_server only when versitygw is not
 * installed (S3_TEST_SERVER=moto picks moto even then, to run the suite as the fallback does). When
 * neither is, starting fails: S3 tests must fail loudly, never skip.
 *
 * Credentials go to the server through its environment, not its argv (visible in `ps`).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { S3Connection, type S3StoreOptions, S3Store } from '../../checkpoint';

export interface S3TestServer {
  kind: 'versitygw' | 'moto';
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Store options pointing at this server (merge test tuning into them). */
  options(extra?: S3StoreOptions): S3StoreOptions;
  /** A store on `s3://bucket/<prefix>` with its own connection. */
  store(prefix: string, extra?: S3StoreOptions): S3Store;
  /** Environment for a child process (the CLI) to reach this server through the standard AWS variables. */
  env(): NodeJS.ProcessEnv;
  /** SIGTERM, wait for exit, remove the data directory. */
  stop(): Promise<void>;
  /** SIGKILL (a crash), wait for exit; data stays for restart(). */
  kill(): Promise<void>;
  /** Start again on the same port and data directory (moto keeps no data: its bucket comes back empty). */
  restart(): Promise<void>;
  /** Whether objects survive kill() + restart() (versitygw: yes; moto: in memory only). */
  persistent: boolean;
  /** Whether the server checks request signatures (versitygw: yes; moto: accepts any credentials). */
  checksCredentials: boolean;
  /** SIGSTOP: the kernel still accepts connections, the server answers nothing (a hung server). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
}

/** versitygw or moto_server on PATH or in Go's bin directory (S3_TEST_SERVER=moto|versitygw: only that one). */
export function findS3Server(
  only = process.env.S3_TEST_SERVER,
): { kind: 'versitygw' | 'moto'; path: string } | null {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  const go = spawnSync('go', ['env', 'GOBIN', 'GOPATH'], { encoding: 'utf8' });
  if (go.status === 0) {
    const [gobin, gopath] = go.stdout.split('\n').map((s) => s.trim());
    if (gobin) dirs.push(gobin);
    if (gopath) dirs.push(...gopath.split(delimiter).map((p) => join(p, 'bin')));
  }
  for (const [kind, name] of [
    ['versitygw', 'versitygw'],
    ['moto', 'moto_server'],
  ] as const) {
    if (only && only !== kind) continue;
    for (const dir of dirs) {
      const p = join(dir, name);
      if (existsSync(p)) return { kind, path: p };
    }
  }
  return null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Until the server answers HTTP at all (403 without credentials is an answer). */
async function waitUntilUp(
  endpoint: string,
  child: ChildProcess,
  log: () => string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `S3 test server exited during start-up (${child.exitCode ?? child.signalCode}): ${log()}`,
      );
    }
    try {
      await fetch(endpoint, { signal: AbortSignal.timeout(1000) });
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`S3 test server did not answer at ${endpoint}: ${log()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** The S3 server for the tests; `kind` asks for that one alone (a test that must run on both). */
/**
 * SIGSTOP, then wait until the kernel shows the process stopped: on a busy machine the signal can take a
 * moment to land, and a request sent meanwhile would still be answered.
 */
function stopNow(child: ChildProcess): void {
  child.kill('SIGSTOP');
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline) {
    try {
      const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
      if (/\) [Tt] /.test(stat)) return;
    } catch {
      return; // no /proc (not Linux): the signal alone
    }
  }
}

export async function startS3Server(kind?: 'versitygw' | 'moto'): Promise<S3TestServer> {
  const found = findS3Server(kind);
  if (!found) {
    throw new Error(
      'no S3 server for the tests: install versitygw (bash infra/install-tools.sh) or moto (pip install "moto[server]")',
    );
  }
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const accessKeyId = `test${randomBytes(6).toString('hex')}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  const region = 'us-east-1';
  const bucket = `ckpt-test-${randomBytes(4).toString('hex')}`;
  const root = mkdtempSync(join(tmpdir(), 'ckpt-s3-'));
  const data = join(root, 'data');
  mkdirSync(data);
  let output = '';
  let child: ChildProcess;

  const launch = async () => {
    const env = { ...process.env, ROOT_ACCESS_KEY_ID: accessKeyId, ROOT_SECRET_ACCESS_KEY: secretAccessKey };
    const args =
      found.kind === 'versitygw'
        ? ['--port', `127.0.0.1:${port}`, '--quiet', 'posix', data]
        : ['-H', '127.0.0.1', '-p', String(port)];
    output = '';
    const proc = spawn(found.path, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    // A test process that dies must not leave a server running.
    const reap = () => proc.kill('SIGKILL');
    process.once('exit', reap);
    proc.once('exit', () => process.removeListener('exit', reap));
    child.stdout?.on('data', (d) => (output = (output + d).slice(-4000)));
    child.stderr?.on('data', (d) => (output = (output + d).slice(-4000)));
    await waitUntilUp(endpoint, child, () => output);
  };
  await launch();

  const options = (extra: S3StoreOptions = {}): S3StoreOptions => ({
    endpoint,
    region,
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    ...extra,
  });
  const server: S3TestServer = {
    kind: found.kind,
    endpoint,
    bucket,
    region,
    accessKeyId,
    secretAccessKey,
    options,
    store: (prefix, extra) => new S3Store(`s3://${bucket}/${prefix}`, new S3Connection(options(extra))),
    env: () => ({
      ...withoutS3Env(process.env),
      AWS_ENDPOINT_URL: endpoint,
      AWS_ACCESS_KEY_ID: accessKeyId,
      AWS_SECRET_ACCESS_KEY: secretAccessKey,
      AWS_REGION: region,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    }),
    async stop() {
      child.kill('SIGCONT'); // a paused server would never act on SIGTERM
      child.kill('SIGTERM');
      await exited(child);
      rmSync(root, { recursive: true, force: true });
    },
    async kill() {
      child.kill('SIGKILL');
      await exited(child);
    },
    async restart() {
      await launch();
      if (found.kind === 'moto') await createBucket();
    },
    persistent: found.kind === 'versitygw',
    checksCredentials: found.kind === 'versitygw',
    pause: () => stopNow(child),
    resume: () => void child.kill('SIGCONT'),
  };
  const createBucket = async () => {
    const conn = new S3Connection(options());
    try {
      const { CreateBucketCommand } = await import('@aws-sdk/client-s3');
      await conn.client.send(new CreateBucketCommand({ Bucket: bucket }));
    } finally {
      conn.destroy();
    }
  };
  try {
    await createBucket();
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/**
 * The caller's environment without settings that would point a child CLI elsewhere (AWS_*, CKPT_*) or
 * make it report to this test runner (NODE_TEST_CONTEXT).
 */
export function withoutS3Env(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) {
    if (/^(AWS_|CKPT_|NODE_TEST)/.test(k) || k === 'RANK') continue;
    out[k] = v;
  }
  return out;
}
