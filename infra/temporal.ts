/**
 * A real Temporal server for development and tests: the Temporal CLI's dev server. Finds the `temporal`
 * binary (PATH, Go's bin folder, the SDK's download in our cache), installs it when missing, and starts
 * `temporal server start-dev` on chosen ports with an in-memory or SQLite-file database.
 * Installing tries the download that the Temporal SDK's test server uses (Temporal's own release host) first,
 * then `go install` from the Go module proxy, and logs which route it took.
 * Run directly (`node --import tsx infra/temporal.ts`), it installs the CLI if needed and prints its path.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { SEARCH_ATTRIBUTES } from '../workflows/visibility';

export const CLI_MODULES = [
  // Later tags carry `replace` directives and cannot be `go install`ed.
  'github.com/temporalio/cli/cmd/temporal@v1.5.1',
  'github.com/temporalio/cli/cmd/temporal@v1.5.0',
  'github.com/temporalio/cli/cmd/temporal@v1.4.1',
];

function goBin(): string | null {
  try {
    const gobin = execFileSync('go', ['env', 'GOBIN'], { encoding: 'utf8' }).trim();
    if (gobin) return gobin;
    return join(execFileSync('go', ['env', 'GOPATH'], { encoding: 'utf8' }).trim(), 'bin');
  } catch {
    return null;
  }
}

/** Path of a Go-installed tool: on PATH first, then in Go's bin folder; null when absent. */
export function findTool(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  const bin = goBin();
  return bin && existsSync(join(bin, name)) ? join(bin, name) : null;
}

/** Where the SDK's download of the CLI is kept: beside infra/install-native.sh's cache. */
function cliDownloadDir(): string {
  const cache =
    process.env.TEMPORAL_CKPT_CACHE ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'temporal-ckpt');
  return join(cache, 'temporal-cli');
}

/** The newest executable the SDK left in the download folder, or null. */
function downloadedCli(): string | null {
  const dir = cliDownloadDir();
  if (!existsSync(dir)) return null;
  const found = readdirSync(dir)
    .filter((name) => name.startsWith('temporal'))
    .map((name) => join(dir, name))
    .filter((path) => statSync(path).isFile() && (statSync(path).mode & 0o111) !== 0)
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  return found[0] ?? null;
}

/**
 * Lets @temporalio/testing download the CLI (it starts and stops a dev server to do so) into our cache.
 * Runs in a child process because the SDK's API is asynchronous; fails fast where Temporal's release host is
 * out of reach, and throws when the SDK's test package is not installed.
 */
function downloadWithSdk(): string {
  const script = `
    const { TestWorkflowEnvironment } = require('@temporalio/testing');
    TestWorkflowEnvironment.createLocal({
      server: { executable: { type: 'cached-download', downloadDir: process.argv[1] } },
    }).then((env) => env.teardown()).catch((err) => { console.error(err.message); process.exit(1); });`;
  execFileSync(process.execPath, ['-e', script, cliDownloadDir()], {
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 300_000,
  });
  const path = downloadedCli();
  if (!path) throw new Error(`the SDK ran but left no temporal executable in ${cliDownloadDir()}`);
  return path;
}

/** The temporal CLI: found, else downloaded the SDK's way, else installed from the Go module proxy. */
export function ensureTemporalCli(
  log: (msg: string) => void = (m) => process.stderr.write(m + '\n'),
): string {
  const found = findTool('temporal') ?? downloadedCli();
  if (found) return found;
  const errors: string[] = [];
  try {
    log(`installing the Temporal CLI: Temporal SDK download into ${cliDownloadDir()}`);
    const path = downloadWithSdk();
    log(`Temporal CLI: downloaded by the Temporal SDK (${path})`);
    return path;
  } catch (err) {
    const reason = String((err as { stderr?: Buffer }).stderr ?? (err as Error).message)
      .trim()
      .split('\n')[0];
    errors.push(`SDK download: ${reason}`);
    log(`Temporal CLI: the SDK download failed (${reason}); falling back to go install`);
  }
  for (const module of CLI_MODULES) {
    log(`installing the Temporal CLI: go install ${module} (one time, a few minutes)`);
    try {
      execFileSync('go', ['install', module], { stdio: ['ignore', 'inherit', 'inherit'] });
      const path = findTool('temporal');
      if (path) {
        log(`Temporal CLI: built with go install ${module} (${path})`);
        return path;
      }
    } catch (err) {
      errors.push(`${module}: ${(err as Error).message}`);
    }
  }
  throw new Error(`could not install the Temporal CLI:\n${errors.join('\n')}`);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export interface DevServerOptions {
  port?: number;
  uiPort?: number;
  /** SQLite file: state survives a restart. Default: in memory. */
  db?: string;
  namespace?: string;
  ip?: string;
  /** Where the server's own log goes (default: ignored). */
  stdio?: 'inherit' | 'ignore';
}

export interface DevServer {
  address: string;
  uiAddress: string;
  port: number;
  uiPort: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function startDevServer(options: DevServerOptions = {}): Promise<DevServer> {
  const bin = ensureTemporalCli();
  const ip = options.ip ?? '127.0.0.1';
  const port = options.port ?? (await freePort());
  const uiPort = options.uiPort ?? (await freePort());
  // A server already on the port would pass the readiness check below and be taken for this one (while
  // the new one exits on the bind error): refuse instead.
  if (await portOpen(ip, port))
    throw new Error(`cannot start the Temporal dev server: ${ip}:${port} is already in use`);
  const args = [
    'server',
    'start-dev',
    '--ip',
    ip,
    '--port',
    String(port),
    '--ui-port',
    String(uiPort),
    '--log-level',
    'error',
  ];
  if (options.db) args.push('--db-filename', options.db);
  if (options.namespace && options.namespace !== 'default') args.push('--namespace', options.namespace);
  // Search attributes the pipelines set (CkptTag, CkptDir, CkptStep, CkptBest, CkptState), so runs can be filtered in
  // the Web UI and with `temporal workflow list --query`.
  for (const { key, cliType } of SEARCH_ATTRIBUTES) args.push('--search-attribute', `${key.name}=${cliType}`);
  const child = spawn(bin, args, { stdio: options.stdio ?? 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitForPort(ip, port, 60_000, child);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    address: `${ip}:${port}`,
    uiAddress: `http://${ip}:${uiPort}`,
    port,
    uiPort,
    process: child,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        // Until it is gone: a restart on the same port and database must not race the old process.
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      }
    },
  };
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = createConnection({ host, port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

async function waitForPort(
  host: string,
  port: number,
  timeoutMs: number,
  child: ChildProcess,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`temporal server exited (${child.exitCode ?? child.signalCode}) before listening`);
    }
    if (await portOpen(host, port)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`temporal server did not listen on ${host}:${port} within ${timeoutMs} ms`);
}

if (require.main === module) process.stdout.write(ensureTemporalCli() + '\n');
