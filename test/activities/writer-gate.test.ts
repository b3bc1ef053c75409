/**
 * A pipeline's training child renews its writer lease only as far as its worker's confirmations (the
 * Temporal server saying the attempt is current) allow. A worker cut off from the server sends none: the
 * child stops within one TTL with WriterLeaseExpiredError, and commits nothing after its lease ran out,
 * although the store is still there. With confirmations it trains to the end and releases the directory.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCkpt } from '../../activities/child';
import {
  committedSteps,
  manifestFile,
  openStore,
  readWriter,
  verifyCheckpoint,
  writerEpochs,
} from '../../checkpoint';
import { WRITER_CONFIRMED, type TrainRequest } from '../../train/request';

const root = mkdtempSync(join(tmpdir(), 'ckpt-gate-'));
after(() => rmSync(root, { recursive: true, force: true }));
const TTL_MS = 1500;

function request(dir: string, steps: number): TrainRequest {
  return {
    dir,
    steps,
    saveEvery: 2,
    resume: 'last',
    program: 'gpt',
    config: { n_layer: 1, n_embd: 16, n_head: 2, n_kv_head: 2, sequence_len: 16 },
    run: { batch: 2 },
    writer: { claim: 'pipeline-under-test', takeOver: 'same-claim', gated: true },
  };
}

const env = { CKPT_WRITER_TTL_MS: String(TTL_MS), CKPT_CLOCK_SKEW_MS: '0' };

describe('the writer lease of a training child follows its worker’s confirmations', () => {
  it('without confirmations (a worker cut off from the server) it stops within one TTL and commits nothing after', async () => {
    const dir = join(root, 'cut-off');
    const started = Date.now();
    const result = await runCkpt(['train', '--from-ipc', '--progress-json'], {
      request: request(dir, 100_000),
      env,
    });
    const seconds = (Date.now() - started) / 1000;
    assert.equal(result.code, 1, result.stderrTail);
    assert.equal(result.error?.errorType, 'WriterLeaseExpiredError', result.stderrTail);
    assert.equal(result.error?.retryable, true);
    assert.ok(seconds < 60, `stopped after ${seconds} s`);
    const store = openStore(dir);
    const [epoch] = await writerEpochs(store);
    const lease = await readWriter(store, epoch!);
    assert.equal(lease?.released, false, 'a lost lease is not released: it simply ran out');
    const steps = await committedSteps(dir);
    assert.ok(steps.length > 0, 'it trained and committed while its lease was valid');
    for (const step of steps) {
      assert.equal((await verifyCheckpoint(dir, step)).ok, true);
      const manifest = JSON.parse((await store.read(manifestFile(step))).toString()) as {
        committed_at: string;
      };
      assert.ok(
        Date.parse(manifest.committed_at) <= Date.parse(lease!.expires_at),
        `step ${step} committed at ${manifest.committed_at}, the lease ran out at ${lease!.expires_at}`,
      );
    }
  });

  it('with confirmations it trains past several TTLs to the end and releases the directory', async () => {
    const dir = join(root, 'confirmed');
    const result = await runCkpt(['train', '--from-ipc', '--progress-json'], {
      request: request(dir, 150),
      env,
      onStart: (send) => {
        const timer = setInterval(() => send({ type: WRITER_CONFIRMED, at: Date.now() }), TTL_MS / 5);
        return () => clearInterval(timer);
      },
    });
    assert.equal(result.code, 0, result.stderrTail);
    assert.equal((await committedSteps(dir)).at(-1), 150);
    const store = openStore(dir);
    const lease = await readWriter(store, (await writerEpochs(store)).at(-1)!);
    assert.equal(lease?.released, true);
  });
});
