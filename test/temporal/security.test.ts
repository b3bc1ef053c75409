/**
 * What an operator relies on when anyone with access to the namespace can start pipelines, on a real dev
 * server with a real `ckpt worker`: a pipeline whose directory is outside the workers' allowed roots fails
 * for good, naming the directory and the roots, and nothing is created there; the metrics endpoint listens
 * where the operator said; and credentials in the environment of the worker and the CLI (S3 keys, the
 * Temporal API key) appear nowhere: not in their output, the worker's debug log, the runs' histories or
 * the checkpoints' files, whether the runs complete or fail. With a codec key set, the runs' payloads are
 * encrypted in the history (no path, no metric in clear) and `ckpt codec-server` decodes them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { connectClient } from '../../activities/client';
import { loadConfig } from '../../temporal.config';
import { ApplicationFailure, TemporalFailure } from '@temporalio/common';
import { freePort } from '../../infra/temporal';
import { shownHistory } from '../helpers/history';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { ROOT } from '../helpers/cli';
import {
  SMALL_MODEL,
  temporalEnv,
  withTimeout,
  type TemporalTestEnv,
  type TestWorker,
} from '../helpers/temporal';

/** Known credential values, each unlike anything else a run writes. */
const SECRETS = {
  AWS_ACCESS_KEY_ID: 'AKIAsecretNEVERlogged1',
  AWS_SECRET_ACCESS_KEY: 'secret-access-key-NEVER-logged-2',
  AWS_SESSION_TOKEN: 'session-token-NEVER-logged-3',
  // Sent as Temporal clients send it (an authorization header); the dev server takes no TLS and checks no
  // key, so TLS is turned off explicitly (an API key turns it on by default).
  TEMPORAL_API_KEY: 'temporal-api-key-NEVER-logged-4',
  TEMPORAL_TLS: 'false',
  // Payloads are encrypted with this key on the worker and the CLI alike.
  CKPT_CODEC_KEYS: `codec-1:${randomBytes(32).toString('base64')}`,
};
const SECRET_VALUES = Object.entries(SECRETS)
  .filter(([k]) => k !== 'TEMPORAL_TLS')
  .map(([k, v]) => (k === 'CKPT_CODEC_KEYS' ? v.slice('codec-1:'.length) : v));

const T = temporalEnv('security');
let env: TemporalTestEnv;
let worker: TestWorker;
let s3: S3TestServer;
let allowed: string;
let metricsPort: number;
/** A client with the same settings as the CLI: it decrypts what the runs return. */
let client: Client;
/** Everything the CLI printed, and every run started, for the secrets check at the end. */
const printed: string[] = [];
const runs: string[] = [];

before(async () => {
  [env, s3] = await Promise.all([T.start(), startS3Server()]);
  allowed = join(env.dir, 'allowed');
  metricsPort = await freePort();
  client = await connectClient(loadConfig({ ...env.env, ...SECRETS }).temporal);
  worker = await env.startWorker('all', {
    env: { ...SECRETS, CKPT_ALLOWED_ROOTS: allowed, CKPT_LOG_LEVEL: 'debug', CKPT_LOG_FORMAT: 'json' },
    args: ['--metrics-port', String(metricsPort), '--metrics-host', '127.0.0.2'],
  });
});

after(async () => {
  await client?.connection.close();
  await s3?.stop();
});

async function ckpt(args: string[], extra: NodeJS.ProcessEnv = {}) {
  const res = await env.ckpt(args, { env: { ...SECRETS, ...extra }, timeoutMs: 90_000 });
  printed.push(res.stdout, res.stderr);
  return res;
}

/** Start a pipeline on `root` (a --noop one unless `flags` say what to train); its id. */
async function startPipeline(root: string, tag: string, flags = ['--steps=4', '--noop']): Promise<string> {
  const res = await ckpt(['pipeline', 'start', `--root=${root}`, `--tag=${tag}`, ...flags]);
  assert.equal(res.code, 0, res.stderr);
  runs.push(res.stdout.trim());
  return res.stdout.trim();
}

/** The ApplicationFailure at the root of a failed run's error. */
async function failureOf(id: string): Promise<ApplicationFailure> {
  const failure = await client.workflow
    .getHandle(id)
    .result()
    .then(
      () => assert.fail(`${id} completed`),
      (err: unknown) => err,
    );
  assert.ok(failure instanceof WorkflowFailedError, String(failure));
  let cause: unknown = failure.cause;
  while (cause instanceof TemporalFailure && !(cause instanceof ApplicationFailure)) cause = cause.cause;
  assert.ok(cause instanceof ApplicationFailure, String(cause));
  return cause;
}

describe('allowed roots on the workers', () => {
  it('a pipeline under the allowed root trains and completes', async () => {
    const id = await startPipeline(allowed, 'inside', [
      ...SMALL_MODEL,
      '--steps=2',
      '--segment-steps=2',
      '--save-every=2',
    ]);
    await client.workflow.getHandle(id).result();
    assert.ok(existsSync(join(allowed, 'base_checkpoints', 'inside', 'manifest_000002.json')));
  });

  it('a pipeline whose directory is outside fails for good, naming it and the roots; the workers write nothing there', async () => {
    const outside = join(env.dir, 'elsewhere');
    const cause = await failureOf(await startPipeline(outside, 'escape'));
    assert.equal(cause.type, 'OutsideAllowedRootsError');
    assert.equal(cause.nonRetryable, true);
    assert.ok(cause.message.includes(join(outside, 'base_checkpoints', 'escape')), cause.message);
    assert.ok(cause.message.includes(`outside the allowed roots (${allowed})`), cause.message);
    // The one file there is the claim `pipeline start` made on the user's side (checkpoint/claim.ts); the
    // workers refused even to give it back.
    assert.deepEqual(readdirSync(join(outside, 'base_checkpoints', 'escape')), ['claim.json']);
  });
});

describe('the metrics endpoint (ckpt worker --metrics-host)', () => {
  it('listens on the address given, and not on 127.0.0.1', async () => {
    const res = await fetch(`http://127.0.0.2:${metricsPort}/metrics`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /ckpt_/);
    await assert.rejects(fetch(`http://127.0.0.1:${metricsPort}/metrics`));
  });
});

describe('credentials never appear', () => {
  it('an S3 server refusing the credentials, with --debug stack traces (a failing path)', async () => {
    const res = await ckpt(['list', `s3://${s3.bucket}/runs`, '--debug'], {
      AWS_ENDPOINT_URL: s3.endpoint,
      AWS_REGION: s3.region,
      CKPT_LOG_LEVEL: 'debug',
    });
    // versitygw checks credentials (moto takes any): then the refusal, exit 2, with its stack trace.
    if (s3.checksCredentials) {
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, /StoreError: cannot list .*access key[\s\S]*\n\s+at /);
    }
  });

  it('a run of a program no worker has fails (a failing path too)', async () => {
    const id = await startPipeline(allowed, 'noprogram', ['--program=nosuch', '--steps=2']);
    assert.equal((await failureOf(id)).type, 'ProgramNotRegisteredError');
    const status = await ckpt(['pipeline', 'status', id]);
    assert.match(status.stdout + status.stderr, /failed/);
  });

  it('in the CLI output, the worker debug log, the histories and the checkpoint files', async () => {
    const places: Array<[string, string]> = [
      ['CLI output', printed.join('\n')],
      ['worker log', worker.log()],
    ];
    assert.match(worker.log(), /"level":20/, 'the worker logged at debug level');
    for (const id of runs) {
      const shown = await shownHistory(env.address, id);
      places.push([`history of ${id}`, `${shown.json}\n${shown.payloads}\n${shown.searchAttributes}`]);
    }
    const dir = join(allowed, 'base_checkpoints', 'inside');
    const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
    assert.ok(files.some((f) => f.startsWith('meta_')));
    for (const f of files) places.push([f, readFileSync(join(dir, f), 'latin1')]);
    for (const [where, text] of places) {
      assert.ok(text.length > 0, `${where} is empty`);
      for (const secret of SECRET_VALUES) assert.ok(!text.includes(secret), `${where} holds ${secret}`);
    }
  });
});

describe('payload encryption (CKPT_CODEC_KEYS)', () => {
  const insideDir = () => join(allowed, 'base_checkpoints', 'inside');

  it('the history holds no path or metric in clear; only the search attributes show the directory', async () => {
    const shown = await shownHistory(env.address, runs[0]!);
    assert.match(shown.json, /binary\/encrypted|YmluYXJ5L2VuY3J5cHRlZA/, 'payloads are marked encrypted');
    for (const plain of [insideDir(), 'finalLoss', 'saveEvery', '"loss"']) {
      assert.ok(!shown.payloads.includes(plain), `${plain} is in clear in the history`);
    }
    // Temporal indexes search attributes: they stay in clear (docs/security.md says so).
    assert.ok(shown.searchAttributes.includes(insideDir()));
  });

  it("a failed run's history shows the failure's type, not its message", async () => {
    const shown = await shownHistory(env.address, runs[1]!);
    assert.match(shown.json, /OutsideAllowedRootsError/);
    for (const plain of ['outside the allowed roots', join(env.dir, 'elsewhere', 'base_checkpoints')]) {
      assert.ok(!`${shown.json}\n${shown.payloads}`.includes(plain), `${plain} is in clear in the history`);
    }
  });

  it('ckpt codec-server decodes them for the Web UI, with the Authorization it requires', async () => {
    const port = await freePort();
    const server = spawn(
      process.execPath,
      [join(ROOT, 'bin', 'ckpt.js'), 'codec-server', '--port', String(port)],
      {
        env: { ...env.env, ...SECRETS, CKPT_CODEC_AUTH: 'Bearer ui-token' },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    try {
      let log = '';
      await withTimeout(
        new Promise<void>((resolve) =>
          server.stderr!.on('data', (d: Buffer) => {
            log += d.toString();
            if (log.includes('codec server on')) resolve();
          }),
        ),
        20_000,
        'codec server start-up',
      );
      const shown = JSON.parse((await shownHistory(env.address, runs[0]!)).json) as {
        events: Array<{ workflowExecutionStartedEventAttributes?: { input: { payloads: unknown[] } } }>;
      };
      const payloads = shown.events[0]!.workflowExecutionStartedEventAttributes!.input.payloads;
      const decode = (headers: Record<string, string>) =>
        fetch(`http://127.0.0.1:${port}/decode`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify({ payloads }),
        });
      assert.equal((await decode({})).status, 401);
      const res = await decode({ authorization: 'Bearer ui-token' });
      assert.equal(res.status, 200);
      const body = (await res.json()) as { payloads: Array<{ data: string }> };
      const input = JSON.parse(Buffer.from(body.payloads[0]!.data, 'base64').toString()) as { dir: string };
      assert.equal(input.dir, insideDir());
    } finally {
      server.kill('SIGTERM');
    }
  });
});
