/**
 * Campaign 8: pipelines across hosts under network partitions, with network namespaces on this machine.
 *
 * Every namespace, link and process of a run is made by the run and removed at its end (also on failure
 * and on SIGINT). Namespaces (names `ckh<hex>-<role>`): `tmp` (the Temporal dev server), `s3` (versitygw),
 * `ctl` (the control worker), `h1`, `h2`, … (training hosts, one `ckpt worker --role train` each), `cli`
 * (where `ckpt pipeline start` runs) and `obs` (this campaign's own observer: the reference run, the
 * directory watcher, the audits). Each (host, service) pair has its own point-to-point veth link in a
 * /30 of 10.213.0.0/16, so that one link can be cut alone (`ip link set … down`), and there is no route
 * out of the namespaces. All hosts share one store: an s3:// root on the versitygw.
 *
 * Scenarios (FAULT_HOSTS_TRIALS each, default 10; FAULT_HOSTS_SCENARIOS=zombie,s3,server,lost,twostarts):
 *   zombie     the training host that runs the segment cut off from the Temporal server (it still reaches
 *              S3) for the lease length plus 3-6 s: the retry runs on the other host and takes the lease
 *              over; the cut-off child must commit nothing once its lease has expired.
 *   s3         the training host that runs the segment cut off from S3 for 4-10 s.
 *   server     the Temporal server cut off from every host (training, control, client) for 4-10 s.
 *   lost       the training host that runs the segment lost: every process in its namespace SIGKILLed,
 *              the namespace removed; a fresh host joins at once (the replaced node).
 *   twostarts  two `ckpt pipeline start` on one directory at once, with different --id: exactly one is
 *              accepted, the other exits 2; the accepted one runs to the end.
 * The fault lands at a random moment, uniform over the first 80 % of the reference run's training time,
 * counted from the first segment's start.
 *
 * Counted per scenario: runs completed; final model and optimizer files bitwise equal to an uninterrupted
 * `ckpt train` of the same settings; torn checkpoints (committed, not verifying at the end); committed
 * steps lost or overwritten (the directory is polled every ~200 ms during the trial: each manifest's and
 * each of its files' bytes and checksum when first seen; any later change or disappearance counts, and all of
 * them are hashed again at the end; there is no retention in the campaign); zombie commits (the writer
 * records are polled too, keeping the latest expiry seen per epoch: a manifest whose `writer_epoch` is e and
 * whose `committed_at` is after epoch e's latest expiry is a commit by a writer whose lease had expired).
 *
 * Needs root and `ip` (iproute2) with network namespace support, `nsenter`, the Temporal CLI and versitygw
 * (on PATH or in Go's bin folder). Usage: npm run fault:hosts   (FAULT_SEED, FAULT_HOSTS_TRIALS,
 * FAULT_HOSTS_SCENARIOS)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Client, Connection } from '@temporalio/client';
import {
  configureS3,
  openStore,
  parseFileName,
  S3Connection,
  verifyCheckpoint,
  writerEpochs,
  type Store,
} from '../../checkpoint';
import { ensureTemporalCli } from '../../infra/temporal';
import { SEARCH_ATTRIBUTES } from '../../workflows/visibility';
import type { PipelineState } from '../../workflows/pipeline';
import { ROOT } from '../helpers/cli';
import { findS3Server } from '../helpers/s3-server';
import {
  baseEnv,
  pendingActivities,
  pipelineStartArgs,
  sleep,
  smallTrainFlags,
  waitFor,
  withTimeout,
} from '../helpers/temporal';
import { envInt, report, Rng, runGoals, SEED, zeroGoal, type Goal } from './lib';

const BIN = join(ROOT, 'bin', 'ckpt.js');
const TRIALS = envInt('FAULT_HOSTS_TRIALS', 10);
const ALL_SCENARIOS = ['zombie', 's3', 'server', 'lost', 'twostarts'] as const;
type Scenario = (typeof ALL_SCENARIOS)[number];
const SCENARIOS = (process.env.FAULT_HOSTS_SCENARIOS ?? ALL_SCENARIOS.join(','))
  .split(',')
  .filter(Boolean) as Scenario[];
const TTL_MS = 5000;
const STEPS = envInt('FAULT_HOSTS_STEPS', 300);
const SEGMENT = envInt('FAULT_HOSTS_SEGMENT', 100);
const SAVE_EVERY = 20;
const TRAIN_FLAGS = smallTrainFlags(STEPS, SAVE_EVERY);
const TEMPORAL_PORT = 7233;
const S3_PORT = 7070;
const pad = (step: number) => String(step).padStart(6, '0');
const FINAL = [`model_${pad(STEPS)}.safetensors`, `optim_${pad(STEPS)}_rank0.safetensors`];
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** The checksum of `b` of the kind `expected` is (a manifest's crc32, 8 hex digits, or a sha256). */
const checksumLike = (b: Buffer, expected: string) =>
  expected.length === 8 ? crc32(b).toString(16).padStart(8, '0') : sha(b);

// --- namespaces ------------------------------------------------------------------------------------------

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const nsPath = (ns: string) => `/run/netns/${ns}`;

/** Namespaces of the run with this prefix (also ones left by a run that died). */
function runNamespaces(prefix: string): string[] {
  return ip('netns', 'list')
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`${prefix}-`));
}

/** SIGKILL every process in the namespace, then remove it (its links go with it). */
function removeNamespace(ns: string): void {
  for (let i = 0; i < 20; i++) {
    const pids = ip('netns', 'pids', ns).split('\n').filter(Boolean).map(Number);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    execFileSync('sleep', ['0.1']);
  }
  try {
    ip('netns', 'del', ns);
  } catch {
    // gone already
  }
}

function cleanupRun(prefix: string): number {
  const left = runNamespaces(prefix);
  // The observer (where the campaign itself runs) last.
  for (const ns of left.sort((a, b) => Number(a.endsWith('-obs')) - Number(b.endsWith('-obs'))))
    removeNamespace(ns);
  return left.length;
}

// --- outer process: make the observer namespace, run the campaign inside it, always clean up --------------

async function outer(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('fault:hosts needs root (network namespaces)');
  const prefix = `ckh${randomBytes(3).toString('hex')}`;
  const work = mkdtempSync(join(tmpdir(), 'ckpt-fault-hosts-'));
  const running: { child?: ChildProcess } = {};
  const finish = (code: number) => {
    const n = cleanupRun(prefix);
    rmSync(work, { recursive: true, force: true });
    process.stderr.write(`cleaned up: ${n} namespace(s) of run ${prefix} removed with their processes\n`);
    process.exit(code);
  };
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`${signal}: stopping the campaign and cleaning up\n`);
    running.child?.kill('SIGTERM');
    setTimeout(() => finish(130), 5000).unref();
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  try {
    ip('netns', 'add', `${prefix}-obs`);
    ip('-n', `${prefix}-obs`, 'link', 'set', 'lo', 'up');
  } catch (err) {
    process.stderr.write(`cannot make a network namespace: ${(err as Error).message}\n`);
    finish(1);
  }
  // nsenter --net keeps this mount namespace, so the campaign can make and remove namespaces itself.
  const child = spawn(
    'nsenter',
    [`--net=${nsPath(`${prefix}-obs`)}`, process.execPath, ...process.execArgv, process.argv[1]!],
    {
      env: {
        ...process.env,
        FAULT_HOSTS_PREFIX: prefix,
        FAULT_HOSTS_WORK: work,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      },
      stdio: 'inherit',
    },
  );
  running.child = child;
  child.on('exit', (code, signal) => finish(interrupted ? 130 : (code ?? (signal ? 1 : 0))));
}

// --- inner process: the campaign --------------------------------------------------------------------------

interface Link {
  /** Address of the service end (what the host connects to) and the host end's namespace. */
  serviceIp: string;
  hostNs: string;
  /** Interface name in the host's namespace. */
  dev: string;
}

interface Host {
  name: string;
  ns: string;
  links: { tmp: Link; s3: Link };
  worker?: Worker;
}

interface Worker {
  role: 'train' | 'control';
  pid: number;
  proc: ChildProcess;
  exited: Promise<void>;
  log(): string;
  /** Bytes of stderr so far (a mark for since()). */
  written(): number;
  /** What it wrote since `mark` (at most the last 64 KiB). */
  since(mark: number): string;
}

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

class Net {
  private subnet = 0;
  constructor(readonly prefix: string) {}
  ns(name: string): string {
    return `${this.prefix}-${name}`;
  }
  addNamespace(name: string): string {
    const ns = this.ns(name);
    ip('netns', 'add', ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    return ns;
  }
  /** A point-to-point link between host namespace `hostNs` and the service's namespace, in its own /30. */
  link(hostNs: string, hostName: string, service: 'tmp' | 's3' | string): Link {
    const k = ++this.subnet;
    if (k > 16000) throw new Error('out of /30 subnets');
    const base = `10.213.${k >> 6}.${(k & 63) * 4}`.split('.').map(Number);
    const addr = (n: number) => `${base[0]}.${base[1]}.${base[2]}.${base[3]! + n}`;
    const svcNs = this.ns(service);
    const dev = `to-${service}`;
    const peer = `${hostName}`.slice(0, 15);
    ip('link', 'add', dev, 'netns', hostNs, 'type', 'veth', 'peer', 'name', peer, 'netns', svcNs);
    ip('-n', hostNs, 'addr', 'add', `${addr(2)}/30`, 'dev', dev);
    ip('-n', svcNs, 'addr', 'add', `${addr(1)}/30`, 'dev', peer);
    ip('-n', hostNs, 'link', 'set', dev, 'up');
    ip('-n', svcNs, 'link', 'set', peer, 'up');
    return { serviceIp: addr(1), hostNs, dev };
  }
  cut(link: Link): void {
    ip('-n', link.hostNs, 'link', 'set', link.dev, 'down');
  }
  heal(link: Link): void {
    ip('-n', link.hostNs, 'link', 'set', link.dev, 'up');
  }
}

/** Spawn `cmd` inside namespace `ns` (nsenter execs it: the pid is the command's). */
function spawnIn(ns: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, stdio: 'pipe' | 'ignore') {
  return spawn('nsenter', [`--net=${nsPath(ns)}`, cmd, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', stdio, stdio],
  });
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port, timeout: 1000 }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false)).on('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

const exitedPromise = (p: ChildProcess) =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => p.once('exit', () => r()));

interface TrialRecord {
  scenario: Scenario;
  trial: number;
  completed: boolean;
  bitwise: boolean;
  torn: number;
  lostOrOverwritten: number;
  zombie: number;
  noRecord: number;
  committed: number;
  retries: number;
  note: string;
}

/** A trial that did not get as far as a run to follow. */
const notRun = (scenario: Scenario, trial: number, note: string): TrialRecord => ({
  scenario,
  trial,
  completed: false,
  bitwise: false,
  torn: 0,
  lostOrOverwritten: 0,
  zombie: 0,
  noRecord: 0,
  committed: 0,
  retries: -1,
  note,
});

/**
 * Polls a checkpoint directory every ~200 ms: manifests and their files as first seen, writer records'
 * latest expiry per epoch. Any later change or disappearance of a committed byte is counted.
 */
class Watcher {
  /** manifest key → sha256 first seen, its step, epoch, commit time, and its files' checksums. */
  readonly manifests = new Map<
    string,
    { sha: string; step: number; epoch?: number; committedAt?: number; files: Record<string, string> }
  >();
  /** key → listing (bytes, mtime) when its sha was taken. */
  private readonly seen = new Map<string, { bytes: number; mtimeMs: number }>();
  readonly expiry = new Map<number, number>();
  readonly damaged = new Set<string>();
  private stopped = false;
  private loop: Promise<void> | undefined;
  errors = 0;

  constructor(private readonly store: Store) {}

  start(): void {
    this.loop = (async () => {
      while (!this.stopped) {
        const t = Date.now();
        await this.poll().catch(() => void this.errors++);
        await sleep(Math.max(0, 200 - (Date.now() - t)));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    await this.poll(true);
  }

  private expect(key: string, expected: string, entry: { bytes: number; mtimeMs: number }, got: Buffer) {
    if (checksumLike(got, expected) !== expected) this.damaged.add(key);
    this.seen.set(key, entry);
  }

  async poll(full = false): Promise<void> {
    const entries = new Map((await this.store.list()).map((e) => [e.key, e]));
    for (const [key, e] of entries) {
      const epoch = /^writer_(\d+)\.json$/.exec(key)?.[1];
      if (epoch === undefined) continue;
      const prev = this.seen.get(key);
      if (!full && prev && prev.mtimeMs === e.mtimeMs && prev.bytes === e.bytes) continue;
      try {
        const r = JSON.parse((await this.store.read(key)).toString()) as { expires_at: string };
        const at = Date.parse(r.expires_at);
        this.expiry.set(Number(epoch), Math.max(at, this.expiry.get(Number(epoch)) ?? 0));
        this.seen.set(key, e);
      } catch {
        // removed meanwhile (tidied), or read mid-replace: the next poll
      }
    }
    // Known manifests and files: still there, same bytes.
    for (const [key, m] of this.manifests) {
      const keys: Array<[string, string]> = [[key, m.sha], ...Object.entries(m.files)];
      for (const [k, expected] of keys) {
        const e = entries.get(k);
        if (!e) {
          this.damaged.add(k);
          continue;
        }
        const prev = this.seen.get(k);
        if (full || !prev || prev.mtimeMs !== e.mtimeMs || prev.bytes !== e.bytes) {
          const got = await this.store.read(k).catch(() => null);
          if (got === null) this.damaged.add(k);
          else this.expect(k, expected, e, got);
        }
      }
    }
    for (const [key, e] of entries) {
      const p = parseFileName(key);
      if (p?.kind !== 'manifest' || this.manifests.has(key)) continue;
      let bytes: Buffer;
      try {
        bytes = await this.store.read(key);
      } catch {
        continue;
      }
      const m = JSON.parse(bytes.toString()) as {
        step: number;
        writer_epoch?: number;
        committed_at?: string;
        files: Record<string, { crc32?: string; sha256?: string }>;
      };
      const files: Record<string, string> = {};
      for (const [name, rec] of Object.entries(m.files)) files[name] = (rec.crc32 ?? rec.sha256)!;
      this.manifests.set(key, {
        sha: sha(bytes),
        step: m.step,
        epoch: m.writer_epoch,
        committedAt: m.committed_at ? Date.parse(m.committed_at) : undefined,
        files,
      });
      this.seen.set(key, e);
      // The files as the manifest names them: a file of a committed step that already differs is damage.
      for (const [name, expected] of Object.entries(files)) {
        const fe = entries.get(name);
        const got = fe ? await this.store.read(name).catch(() => null) : null;
        if (!fe || got === null) this.damaged.add(name);
        else this.expect(name, expected, fe, got);
      }
    }
  }

  /** What the writer of `epoch` did after `cutAt`: its commits since, the last one's and its lease end's offsets. */
  after(epoch: number, cutAt: number): string {
    const late = [...this.manifests.values()].filter(
      (m) => m.epoch === epoch && m.committedAt !== undefined && m.committedAt > cutAt,
    );
    const last = Math.max(...late.map((m) => m.committedAt!));
    const until = this.expiry.get(epoch);
    return (
      `writer epoch ${epoch} (cut off): ${late.length} commit(s) after the cut` +
      (late.length ? `, the last at +${last - cutAt} ms` : '') +
      (until !== undefined ? `, its latest lease expiry seen +${until - cutAt} ms` : '')
    );
  }

  /** Manifests committed by a writer after its lease's latest expiry seen; and those with no record seen. */
  zombies(): { zombie: string[]; noRecord: string[] } {
    const zombie: string[] = [];
    const noRecord: string[] = [];
    for (const [key, m] of this.manifests) {
      if (m.epoch === undefined || m.committedAt === undefined) {
        noRecord.push(key);
        continue;
      }
      const until = this.expiry.get(m.epoch);
      if (until === undefined) noRecord.push(key);
      else if (m.committedAt > until)
        zombie.push(`${key} (epoch ${m.epoch}, ${m.committedAt - until} ms late)`);
    }
    return { zombie, noRecord };
  }
}

async function inner(prefix: string, work: string): Promise<void> {
  const t0 = Date.now();
  const rng = new Rng(SEED);
  const net = new Net(prefix);
  const temporalBin = ensureTemporalCli();
  const s3Found = findS3Server('versitygw');
  if (!s3Found) throw new Error('fault:hosts needs versitygw (bash infra/install-tools.sh)');

  // Services.
  const tmpNs = net.addNamespace('tmp');
  const s3Ns = net.addNamespace('s3');
  const obsTmp = net.link(net.ns('obs'), 'obs', 'tmp');
  const obsS3 = net.link(net.ns('obs'), 'obs', 's3');
  const serverArgs = [
    'server',
    'start-dev',
    '--ip',
    '0.0.0.0',
    '--port',
    String(TEMPORAL_PORT),
    '--headless',
    '--log-level',
    'error',
    ...SEARCH_ATTRIBUTES.flatMap(({ key, cliType }) => ['--search-attribute', `${key.name}=${cliType}`]),
  ];
  const temporal = spawnIn(tmpNs, temporalBin, serverArgs, process.env, 'ignore');
  const accessKeyId = `test${randomBytes(6).toString('hex')}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  const bucket = `ckpt-hosts-${randomBytes(3).toString('hex')}`;
  const s3Data = join(work, 's3');
  mkdirSync(s3Data);
  const s3 = spawnIn(
    s3Ns,
    s3Found.path,
    ['--port', `0.0.0.0:${S3_PORT}`, '--quiet', 'posix', s3Data],
    { ...process.env, ROOT_ACCESS_KEY_ID: accessKeyId, ROOT_SECRET_ACCESS_KEY: secretAccessKey },
    'ignore',
  );
  await waitFor('the Temporal server', () => portOpen(obsTmp.serviceIp, TEMPORAL_PORT), {
    timeoutMs: 60_000,
    intervalMs: 200,
  });
  await waitFor('the S3 server', () => portOpen(obsS3.serviceIp, S3_PORT), { timeoutMs: 30_000 });
  const s3Options = (endpointIp: string) => ({
    endpoint: `http://${endpointIp}:${S3_PORT}`,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
  });
  configureS3({ ...s3Options(obsS3.serviceIp), requestTimeoutMs: 5000 });
  {
    const conn = new S3Connection(s3Options(obsS3.serviceIp));
    const { CreateBucketCommand } = await import('@aws-sdk/client-s3');
    await waitFor('the bucket', () => conn.client.send(new CreateBucketCommand({ Bucket: bucket })), {
      timeoutMs: 20_000,
    });
    conn.destroy();
  }
  const connection = await Connection.connect({ address: `${obsTmp.serviceIp}:${TEMPORAL_PORT}` });
  const client = new Client({ connection, namespace: 'default' });
  await waitFor(
    'the default namespace',
    () => connection.workflowService.describeNamespace({ namespace: 'default' }).then(() => true),
    { timeoutMs: 60_000, intervalMs: 500 },
  );

  const suffix = randomBytes(3).toString('hex');
  const queues = { train: `ckpt-train-hosts-${suffix}`, control: `ckpt-control-hosts-${suffix}` };
  const hostEnv = (h: { links: { tmp: Link; s3: Link } }): NodeJS.ProcessEnv => ({
    ...baseEnv(),
    TEMPORAL_ADDRESS: `${h.links.tmp.serviceIp}:${TEMPORAL_PORT}`,
    TEMPORAL_NAMESPACE: 'default',
    CKPT_TASK_QUEUE_TRAIN: queues.train,
    CKPT_TASK_QUEUE_CONTROL: queues.control,
    CKPT_HEARTBEAT_TIMEOUT: '3s',
    CKPT_RETRY_INITIAL: '200ms',
    CKPT_RETRY_MAX: '2s',
    CKPT_WRITER_TTL_MS: String(TTL_MS),
    CKPT_S3_REQUEST_TIMEOUT: '2s',
    CKPT_S3_ENDPOINT: `http://${h.links.s3.serviceIp}:${S3_PORT}`,
    AWS_ACCESS_KEY_ID: accessKeyId,
    AWS_SECRET_ACCESS_KEY: secretAccessKey,
    AWS_REGION: 'us-east-1',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  });

  let hostCount = 0;
  const makeHost = (name: string): Host => {
    const ns = net.addNamespace(name);
    return { name, ns, links: { tmp: net.link(ns, name, 'tmp'), s3: net.link(ns, name, 's3') } };
  };
  const startWorker = async (host: Host, role: 'train' | 'control'): Promise<Worker> => {
    const proc = spawnIn(host.ns, process.execPath, [BIN, 'worker', '--role', role], hostEnv(host), 'pipe');
    let log = '';
    let total = 0;
    let ready: () => void = () => undefined;
    const up = new Promise<void>((r) => (ready = r));
    proc.stderr!.on('data', (d: Buffer) => {
      total += d.length;
      log = (log + d.toString()).slice(-65536);
      if (log.split('\n').some((l) => l.includes('Worker state changed') && /\bRUNNING\b/.test(l))) ready();
    });
    proc.stdout!.resume();
    const exited = exitedPromise(proc);
    const worker: Worker = {
      role,
      pid: proc.pid!,
      proc,
      exited,
      log: () => log,
      written: () => total,
      since: (mark) => log.slice(-Math.min(log.length, total - mark)),
    };
    await withTimeout(
      Promise.race([
        up,
        exited.then(() => Promise.reject(new Error(`worker exited at start:\n${log.slice(-3000)}`))),
      ]),
      90_000,
      `worker (${role}) on ${host.name}`,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${log.slice(-3000)}`);
    });
    host.worker = worker;
    return worker;
  };
  const trainHost = async (): Promise<Host> => {
    const h = makeHost(`h${++hostCount}`);
    await startWorker(h, 'train');
    return h;
  };
  const ctl = makeHost('ctl');
  const cli = makeHost('cli');
  const hosts: Host[] = [];
  await Promise.all([startWorker(ctl, 'control'), trainHost().then((h) => hosts.push(h))]);
  hosts.push(await trainHost());
  process.stderr.write(
    `run ${prefix}: Temporal server, S3 server, control host, ${hosts.length} training hosts, client up (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`,
  );

  const ckpt = (args: string[], timeoutMs = 120_000): Promise<CliResult> =>
    new Promise((resolve) => {
      const child = spawnIn(cli.ns, process.execPath, [BIN, ...args], hostEnv(cli), 'pipe');
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d) => (stdout += d));
      child.stderr!.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });

  // The reference: one uninterrupted `ckpt train` of the same settings, on a local folder of the observer.
  const refStart = Date.now();
  const ref = await new Promise<CliResult>((resolve) => {
    const child = spawn(
      process.execPath,
      [BIN, 'train', '--root', join(work, 'ref'), '--tag', 'ref', ...TRAIN_FLAGS],
      { cwd: ROOT, env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stdout.resume();
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: '', stderr }));
  });
  if (ref.code !== 0) throw new Error(`reference run failed: ${ref.stderr}`);
  const refSeconds = (Date.now() - refStart) / 1000;
  const refStore = openStore(join(work, 'ref', 'base_checkpoints', 'ref'));
  const reference = await Promise.all(FINAL.map(async (f) => sha(await refStore.read(f))));
  process.stderr.write(`reference: ${STEPS} steps in ${refSeconds.toFixed(1)} s (one ckpt train)\n`);

  const root = `s3://${bucket}/runs`;
  const dirOf = (tag: string) => `${root}/base_checkpoints/${tag}`;
  const startArgs = (tag: string, extra: string[] = []) =>
    pipelineStartArgs(root, tag, TRAIN_FLAGS, SEGMENT, extra);

  const segmentWorker = async (id: string): Promise<string | undefined> =>
    (await pendingActivities(client, id)).find((a) => a.activityType === 'trainSegment' && a.worker !== '')
      ?.worker;
  const hostOf = (identity: string | undefined) =>
    hosts.find((h) => h.worker && identity?.startsWith(`train-${h.worker.pid}@`));

  /** Every training host has a live worker (one that died meanwhile is started again, and noted). */
  const healthy = async (): Promise<string[]> => {
    const notes: string[] = [];
    for (const h of hosts) {
      const w = h.worker!;
      if (w.proc.exitCode !== null || w.proc.signalCode !== null) {
        notes.push(`worker on ${h.name} had exited (${w.proc.exitCode ?? w.proc.signalCode}); restarted`);
        await startWorker(h, 'train');
      }
    }
    const c = ctl.worker!;
    if (c.proc.exitCode !== null || c.proc.signalCode !== null) {
      notes.push(`control worker had exited; restarted`);
      await startWorker(ctl, 'control');
    }
    return notes;
  };

  const records: TrialRecord[] = [];
  const twoStarts = { accepted: 0, refusedExit2: 0, other: 0 };

  const finish = async (
    scenario: Scenario,
    trial: number,
    id: string,
    dir: string,
    watcher: Watcher,
    note: string,
    cut?: { epoch: number; at: number; worker: Worker; mark: number },
  ) => {
    const handle = client.workflow.getHandle(id);
    let state: PipelineState | undefined;
    let error = '';
    try {
      await waitFor(
        `pipeline ${id} to end`,
        async () => (await handle.describe()).status.name !== 'RUNNING',
        {
          timeoutMs: 300_000,
          intervalMs: 500,
        },
      );
      state = (await handle.result()) as PipelineState;
    } catch (err) {
      const cause = (err as { cause?: { cause?: Error } }).cause?.cause;
      error = `${(err as Error).message}${cause ? `: ${cause.message}` : ''}`;
    }
    await watcher.stop();
    const store = openStore(dir);
    let bitwise = false;
    if (state?.state === 'completed') {
      const got = await Promise.all(FINAL.map(async (f) => sha(await store.read(f))));
      bitwise = got.every((h, i) => h === reference[i]);
    }
    let torn = 0;
    for (const m of watcher.manifests.values()) if (!(await verifyCheckpoint(store, m.step)).ok) torn++;
    const { zombie, noRecord } = watcher.zombies();
    if (cut) {
      note += `; ${watcher.after(cut.epoch, cut.at)}`;
      // How the cut-off writer stopped, in its worker's log (its training child logs there).
      const said = cut.worker
        .since(cut.mark)
        .split('\n')
        .filter((l) => /lease|taken over|fenced/i.test(l))
        .map((l) => (/"msg":"([^"]*)"/.exec(l)?.[1] ?? l).slice(0, 240));
      note += said.length
        ? `; its worker logged: ${[...new Set(said)].join(' | ')}`
        : '; its worker logged nothing about the lease';
    }
    const rec: TrialRecord = {
      scenario,
      trial,
      completed: state?.state === 'completed' && state.step === STEPS,
      bitwise,
      torn,
      lostOrOverwritten: watcher.damaged.size,
      zombie: zombie.length,
      noRecord: noRecord.length,
      committed: watcher.manifests.size,
      retries: state?.retries ?? -1,
      note:
        note +
        (watcher.damaged.size ? `; damaged: ${[...watcher.damaged].join(', ')}` : '') +
        (zombie.length ? `; zombie commits: ${zombie.join(', ')}` : '') +
        (error ? `; ${error}` : ''),
    };
    records.push(rec);
    process.stderr.write(`${scenario} ${trial}: ${JSON.stringify(rec)}\n`);
  };

  /** Start a pipeline and wait for its first segment to run on a training host. */
  const begin = async (tag: string) => {
    const res = await ckpt(startArgs(tag));
    if (res.code !== 0) throw new Error(`pipeline start failed (${res.code}): ${res.stderr}`);
    const id = res.stdout.trim();
    const watcher = new Watcher(openStore(dirOf(tag)));
    watcher.start();
    await waitFor('the first segment to start', () => segmentWorker(id), {
      timeoutMs: 120_000,
      intervalMs: 100,
    });
    const started = Date.now();
    const delayMs = Math.round(rng.next() * refSeconds * 0.8 * 1000);
    await sleep(Math.max(0, started + delayMs - Date.now()));
    const host = hostOf(await segmentWorker(id)) ?? rng.pick(hosts);
    return { id, watcher, delayMs, host };
  };

  for (const scenario of SCENARIOS) {
    for (let trial = 1; trial <= TRIALS; trial++) {
      const pre = await healthy();
      const tag = `${scenario}${trial}`;
      const dir = dirOf(tag);
      const notes = [...pre];
      try {
        if (scenario === 'twostarts') {
          const [a, b] = await Promise.all([
            ckpt(startArgs(tag, ['--id', `${tag}-a`])),
            ckpt(startArgs(tag, ['--id', `${tag}-b`])),
          ]);
          const ok = [a, b].filter((r) => r.code === 0);
          const refused = [a, b].filter((r) => r.code === 2);
          twoStarts.accepted += ok.length;
          twoStarts.refusedExit2 += refused.length;
          twoStarts.other += 2 - ok.length - refused.length;
          notes.push(
            `starts: exit ${a.code} and ${b.code}` +
              (refused[0] ? `; refused with: ${refused[0].stderr.trim().split('\n').at(-1)}` : '') +
              [a, b]
                .filter((r) => r.code !== 0 && r.code !== 2)
                .map((r) => `; other: ${r.stderr.trim().slice(-300)}`)
                .join(''),
          );
          const watcher = new Watcher(openStore(dir));
          watcher.start();
          if (ok.length === 0) {
            await watcher.stop();
            records.push(notRun(scenario, trial, notes.join('; ')));
            continue;
          }
          // Both accepted: both run (counted above); the first is followed to the end.
          await finish(scenario, trial, ok[0]!.stdout.trim(), dir, watcher, notes.join('; '));
          continue;
        }
        const { id, watcher, delayMs, host } = await begin(tag);
        const at = `+${(delayMs / 1000).toFixed(1)} s`;
        let cut: { epoch: number; at: number; worker: Worker; mark: number } | undefined;
        if (scenario === 'zombie' || scenario === 's3') {
          const link = scenario === 'zombie' ? host.links.tmp : host.links.s3;
          const outageMs = scenario === 'zombie' ? TTL_MS + 3000 + rng.int(3000) : 4000 + rng.int(6000);
          const epoch = (await writerEpochs(openStore(dir))).at(-1) ?? 0;
          net.cut(link);
          cut = { epoch, at: Date.now(), worker: host.worker!, mark: host.worker!.written() };
          await sleep(outageMs);
          net.heal(link);
          notes.push(
            `${host.name} cut from ${scenario === 'zombie' ? 'Temporal' : 'S3'} at ${at} for ${outageMs} ms`,
          );
        } else if (scenario === 'server') {
          const links = [...hosts, ctl, cli].map((h) => h.links.tmp);
          const outageMs = 4000 + rng.int(6000);
          for (const l of links) net.cut(l);
          await sleep(outageMs);
          for (const l of links) net.heal(l);
          notes.push(`Temporal server cut from all hosts at ${at} for ${outageMs} ms`);
        } else if (scenario === 'lost') {
          removeNamespace(host.ns);
          hosts.splice(hosts.indexOf(host), 1);
          notes.push(`${host.name} lost at ${at}`);
          hosts.push(await trainHost());
        }
        await finish(scenario, trial, id, dir, watcher, notes.join('; '), cut);
      } catch (err) {
        records.push(
          notRun(
            scenario,
            trial,
            `${notes.join('; ')}; campaign error: ${(err as Error).message.slice(0, 500)}`,
          ),
        );
        process.stderr.write(`${scenario} ${trial}: campaign error: ${(err as Error).stack}\n`);
      }
    }
  }

  const goals: Goal[] = [];
  for (const scenario of SCENARIOS) {
    const rs = records.filter((r) => r.scenario === scenario);
    const sum = (f: (r: TrialRecord) => number) => rs.reduce((a, r) => a + f(r), 0);
    goals.push(
      ...runGoals(scenario, rs, TRIALS, [
        zeroGoal(
          `${scenario}: committed files lost or overwritten`,
          sum((r) => r.lostOrOverwritten),
        ),
        zeroGoal(
          `${scenario}: zombie commits`,
          sum((r) => r.zombie),
          `${sum((r) => r.zombie)} (of ${sum((r) => r.committed)} commits; ${sum((r) => r.noRecord)} without a record seen)`,
        ),
      ]),
    );
  }
  if (SCENARIOS.includes('twostarts')) {
    goals.push({
      what: 'twostarts: accepted / refused with exit 2 / other',
      value: `${twoStarts.accepted} / ${twoStarts.refusedExit2} / ${twoStarts.other}`,
      goal: `${TRIALS} / ${TRIALS} / 0`,
      ok: twoStarts.accepted === TRIALS && twoStarts.refusedExit2 === TRIALS && twoStarts.other === 0,
    });
  }
  report(`Multi-host fault campaign (seed ${SEED}, ${((Date.now() - t0) / 1000).toFixed(0)} s)`, goals, [
    `reference: ${STEPS} steps, segments of ${SEGMENT}, save every ${SAVE_EVERY}, small model; one ckpt train took ${refSeconds.toFixed(1)} s`,
    `writer lease ${TTL_MS} ms, heartbeat timeout 3 s, retry 200ms..2s, S3 request timeout 2 s; ${hostCount} training hosts started in all`,
    ...records.map(
      (r) =>
        `- ${r.scenario} ${r.trial}: ${r.completed ? 'completed' : 'NOT completed'}, ${r.bitwise ? 'bitwise equal' : 'NOT equal'}, retries ${r.retries}, commits ${r.committed}, torn ${r.torn}, lost/overwritten ${r.lostOrOverwritten}, zombie ${r.zombie}; ${r.note}`,
    ),
  ]);
  await connection.close().catch(() => undefined);
  for (const w of [...hosts, ctl].map((h) => h.worker!)) w.proc.kill('SIGTERM');
  await Promise.race([Promise.all([...hosts, ctl].map((h) => h.worker!.exited)), sleep(10_000)]);
  temporal.kill('SIGTERM');
  s3.kill('SIGTERM');
  await Promise.race([Promise.all([exitedPromise(temporal), exitedPromise(s3)]), sleep(10_000)]);
}

const prefixEnv = process.env.FAULT_HOSTS_PREFIX;
if (prefixEnv) {
  inner(prefixEnv, process.env.FAULT_HOSTS_WORK!).then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      process.stderr.write(`fault:hosts failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
} else {
  void outer();
}
