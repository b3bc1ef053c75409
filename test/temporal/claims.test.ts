/**
 * One pipeline per directory, enforced by a claim in the store (checkpoint/claim.ts), against a real dev
 * server: a second `pipeline start` on a busy directory, under any id, is refused naming the running one,
 * and so is `ckpt train`; a terminated pipeline leaves a stale claim that only --take-over replaces; a
 * pipeline that ends (here: cancelled) gives its claim back.
 *
 * Only a control worker runs: a pipeline's first segment then waits for a training worker for ever, so the
 * pipeline stays running without training anything.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { createClaim, newClaim, readClaim, releaseClaim } from '../../checkpoint';
import {
  SMALL_MODEL,
  temporalCli as temporalCliOf,
  temporalEnv,
  waitFor,
  type TemporalTestEnv,
} from '../helpers/temporal';

const T = temporalEnv('claims');
let env: TemporalTestEnv;

before(async () => {
  env = await T.start();
  await env.startWorker('control');
});

const root = () => join(env.dir, 'runs');
const dir = () => join(root(), 'base_checkpoints', 'held');

const temporalCli = (args: string[]) => temporalCliOf(env, args);

const startOn = (tag: string, id: string, ...more: string[]) =>
  env.ckpt([
    'pipeline',
    'start',
    '--root',
    root(),
    '--tag',
    tag,
    ...SMALL_MODEL,
    '--steps',
    '4',
    '--id',
    id,
    ...more,
  ]);
const start = (id: string, ...more: string[]) => startOn('held', id, ...more);
const train = (tag: string) =>
  env.ckpt(['train', '--root', root(), '--tag', tag, ...SMALL_MODEL, '--steps', '2']);

/** The one `ckpt: error:` line of a refused command. */
function errorLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.startsWith('ckpt: error:'));
  assert.equal(lines.length, 1, stderr);
  return lines[0]!;
}

describe('one pipeline per directory', () => {
  it('a second start under another id and a ckpt train are refused while the first runs (exit 2, naming it)', async () => {
    const first = await start('claim-a');
    assert.equal(first.code, 0, first.stderr);
    assert.equal((await readClaim(dir()))?.workflow_id, 'claim-a');

    const second = await start('claim-b');
    assert.equal(second.code, 2, second.stderr);
    assert.match(
      errorLine(second.stderr),
      /is held by pipeline claim-a, which is running.*ckpt pipeline stop claim-a/,
    );

    const trained = await train('held');
    assert.equal(trained.code, 2, trained.stderr);
    assert.match(errorLine(trained.stderr), /is held by pipeline claim-a, which is running/);
    assert.equal((await readClaim(dir()))?.workflow_id, 'claim-a', 'the refusals changed nothing');
  });

  it('a terminated pipeline leaves a stale claim: refused without --take-over, taken over (and logged) with it', async () => {
    await temporalCli(['workflow', 'terminate', '--workflow-id', 'claim-a', '--reason', 'test']);
    const refused = await start('claim-c');
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(errorLine(refused.stderr), /stale claim by pipeline claim-a.*--take-over/);

    const taken = await start('claim-c', '--take-over');
    assert.equal(taken.code, 0, taken.stderr);
    assert.match(taken.stderr, /taking .* over from pipeline claim-a \(--take-over; its claim was closed\)/);
    assert.equal((await readClaim(dir()))?.workflow_id, 'claim-c');
  });

  it('a claim whose workflow the server does not know yet is held (a start between its claim and its workflow), stale only after a minute', async () => {
    const startingDir = join(root(), 'base_checkpoints', 'starting');
    assert.ok(await createClaim(startingDir, newClaim('claim-starting', 'default', env.address)));
    const refused = await startOn('starting', 'claim-other', '--take-over');
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(errorLine(refused.stderr), /is held by pipeline claim-starting, which is starting/);
    const trained = await train('starting');
    assert.equal(trained.code, 2, trained.stderr);
    assert.match(errorLine(trained.stderr), /is held by pipeline claim-starting, which is starting/);

    // The same claim two minutes old: its start never got as far as the workflow, so it is stale.
    await releaseClaim(startingDir, 'claim-starting');
    const old = {
      ...newClaim('claim-starting', 'default', env.address),
      claimed_at: new Date(Date.now() - 120_000).toISOString(),
    };
    assert.ok(await createClaim(startingDir, old));
    const stale = await startOn('starting', 'claim-other');
    assert.equal(stale.code, 2, stale.stderr);
    assert.match(errorLine(stale.stderr), /stale claim by pipeline claim-starting.*--take-over/);
    await releaseClaim(startingDir, 'claim-starting');
  });

  it('a pipeline that ends gives its claim back: the next start needs no --take-over', async () => {
    await temporalCli(['workflow', 'cancel', '--workflow-id', 'claim-c']);
    await waitFor('the claim released', async () => ((await readClaim(dir())) === null ? true : undefined), {
      timeoutMs: 30_000,
      intervalMs: 200,
    });
    const next = await start('claim-d');
    assert.equal(next.code, 0, next.stderr);
    assert.equal((await readClaim(dir()))?.workflow_id, 'claim-d');
    await temporalCli(['workflow', 'terminate', '--workflow-id', 'claim-d', '--reason', 'test over']);
  });
});
