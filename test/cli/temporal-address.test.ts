/**
 * A Temporal server that is not where the settings say: every command that needs one fails within a few
 * seconds (CONNECT_TIMEOUT_MS, plus the start-up of the CLI), exit 1, with one line that names the address
 * it tried, for the client's connection (`ckpt pipeline ...`) and the worker's (`ckpt worker`) alike.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { CONNECT_TIMEOUT_MS } from '../../activities/client';
import { freePort } from '../../infra/temporal';
import { ckptAsync, type CliResult } from '../helpers/cli';

/** The CLI's own start-up (tsx, the SDK) on a busy 2-core machine, on top of the connect timeout. */
const STARTUP_ALLOWANCE_MS = 6000;

let address: string;
before(async () => {
  // A loopback port nothing listens on (freePort closes its probe before answering).
  address = `127.0.0.1:${await freePort()}`;
});

const show = (r: CliResult) => `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;

async function timed(args: string[]): Promise<{ result: CliResult; ms: number }> {
  const started = Date.now();
  const result = await ckptAsync(args, {
    TEMPORAL_ADDRESS: address,
    TEMPORAL_NAMESPACE: 'default',
    CKPT_LOG_FORMAT: 'json',
  });
  return { result, ms: Date.now() - started };
}

function expectConnectionError({ result, ms }: { result: CliResult; ms: number }, command: string): void {
  process.stderr.write(`${command}: failed after ${ms} ms\n`);
  assert.equal(result.code, 1, show(result));
  // The worker logs (JSON) that it is connecting; the error is the one line that is not a log record.
  const lines = result.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
  assert.equal(lines.length, 1, show(result));
  assert.match(
    lines[0]!,
    new RegExp(`^ckpt: error: cannot connect to the Temporal server at ${address.replace(/\./g, '\\.')} `),
    show(result),
  );
  assert.ok(ms < CONNECT_TIMEOUT_MS + STARTUP_ALLOWANCE_MS, `${command} took ${ms} ms`);
}

describe('a wrong Temporal address', () => {
  it('ckpt pipeline status and stop fail within seconds, exit 1, naming the address', async () => {
    const [status, stop] = await Promise.all([
      timed(['pipeline', 'status', 'some-id']),
      timed(['pipeline', 'stop', 'some-id']),
    ]);
    expectConnectionError(status, 'pipeline status');
    expectConnectionError(stop, 'pipeline stop');
  });

  it('ckpt worker fails at once, exit 1, naming the address', async () => {
    expectConnectionError(await timed(['worker', '--role', 'control']), 'worker');
  });
});
