/**
 * What an operator relies on when anyone with access to the namespace can start pipelines, on a real dev
 * server with a real `ckpt worker`: a pipeline whose directory is outside the workers' allowed roots fails
 * for good, naming the directory and the roots, and nothing is created there; the metrics endpoint listens
 * where the operator said; and credentials in the environment of the worker and the CLI (S3 keys, the
 * Temporal API key) appear nowhere: not in their output, the worker's debug log, the runs' histories or
 * the checkpoints' files, whether the runs complete or fail.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure, TemporalFailure } from '@temporalio/common';
import { freePort } from '../../infra/temporal';
import { shownHistory } from '../helpers/history';
import { SMALL_MODEL, temporalEnv, type TemporalTestEnv, type TestWorker } from '../helpers/temporal';

/** Known credential values, each unlike anything else a run writes. */
const SECRETS = {
  AWS_ACCESS_KEY_ID: 'AKIAsecretNEVERlogged1',
  AWS_SECRET_ACCESS_KEY: 'secret-access-key-NEVER-logged-2',
  AWS_SESSION_TOKEN: 'session-token-NEVER-logged-3',
  // Sent as Temporal clients send it (an authorization header); the dev server takes no TLS and checks no
  // key, so TLS is turned off explicitly (an API key turns it on by default).
  TEMPORAL_API_KEY: 'temporal-api-key-NEVER-logged-4',
  TEMPORAL_TLS: 'false',
};
const SECRET_VALUES = Object.entries(SECRETS)
  .filter(([k]) => k !== 'TEMPORAL_TLS')
  .map(([, v]) => v);

const T = temporalEnv('security');
let env: TemporalTestEnv;
let worker: TestWorker;
let allowed: string;
let metricsPort: number;
/** Everything the CLI printed, and every run started, for the secrets check at the end. */
const printed: string[] = [];
const runs: string[] = [];

before(async () => {
  env = await T.start();
  allowed = join(env.dir, 'allowed');
  metricsPort = await freePort();
  worker = await env.startWorker('all', {
    env: { ...SECRETS, CKPT_ALLOWED_ROOTS: allowed, CKPT_LOG_LEVEL: 'debug', CKPT_LOG_FORMAT: 'json' },
    args: ['--metrics-port', String(metricsPort), '--metrics-host', '127.0.0.2'],
  });
});

async function ckpt(args: string[]) {
  const res = await env.ckpt(args, { env: SECRETS, timeoutMs: 90_000 });
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
  const failure = await env.client.workflow
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
    await env.client.workflow.getHandle(id).result();
    assert.ok(existsSync(join(allowed, 'base_checkpoints', 'inside', 'manifest_000002.json')));
  });

  it('a pipeline whose directory is outside fails for good, naming it and the roots, and creates nothing', async () => {
    const outside = join(env.dir, 'elsewhere');
    const cause = await failureOf(await startPipeline(outside, 'escape'));
    assert.equal(cause.type, 'OutsideAllowedRootsError');
    assert.equal(cause.nonRetryable, true);
    assert.ok(cause.message.includes(join(outside, 'base_checkpoints', 'escape')), cause.message);
    assert.ok(cause.message.includes(`outside the allowed roots (${allowed})`), cause.message);
    assert.equal(existsSync(outside), false);
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
    for (const id of runs) places.push([`history of ${id}`, await shownHistory(env.address, id)]);
    // The search sees inside payloads: the first run's directory is there, in clear.
    assert.ok(places[2]![1].includes(join(allowed, 'base_checkpoints', 'inside')), 'payloads decoded');
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
