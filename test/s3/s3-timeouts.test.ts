/**
 * A server that accepts connections and never answers (a hung S3 server, a black-holing proxy) fails every
 * S3 call within maxAttempts x CKPT_S3_REQUEST_TIMEOUT, as a TransientStoreError (exit 1, retried by the
 * activities) naming the endpoint, instead of hanging the command or the training segment for ever. The
 * tests use a limit of a second or less; the default (30 s, 3 attempts) measured about 91 s end to end.
 */
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ApplicationFailure } from '@temporalio/common';
import { activityFailure } from '../../activities/failure';
import {
  AsyncSaver,
  configureS3,
  isRetryable,
  saveCheckpoint,
  type S3Store,
  TransientStoreError,
} from '../../checkpoint';
import { DEFAULT_REQUEST_TIMEOUT_MS } from '../../checkpoint/s3-settings';
import { loadS3Config } from '../../temporal.config';
import { ckptAsync } from '../helpers/cli';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';

/** A loopback TCP listener that accepts connections and never sends a byte. */
async function silentServer(): Promise<{ endpoint: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => srv.close(() => resolve()));
    },
  };
}

/** The rejection of `work` and how long it took to come. */
async function failure(work: Promise<unknown>): Promise<{ err: unknown; ms: number }> {
  const started = Date.now();
  const err = await work.then(
    () => assert.fail('succeeded against a server that does not answer'),
    (e: unknown) => e,
  );
  return { err, ms: Date.now() - started };
}

function assertTransient(err: unknown, pattern: RegExp): asserts err is TransientStoreError {
  assert.ok(err instanceof TransientStoreError, `got ${String(err)}`);
  assert.equal(err.exitCode, 1);
  assert.equal(isRetryable(err), true);
  assert.match(err.message, pattern);
}

let server: S3TestServer;
before(async () => {
  server = await startS3Server();
});
after(async () => {
  configureS3();
  await server?.stop();
});

describe('CKPT_S3_REQUEST_TIMEOUT', () => {
  it('is a duration like the other settings; default 30 s, so 3 attempts stay within 2 minutes', () => {
    assert.equal(loadS3Config({}).requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS);
    assert.ok(3 * DEFAULT_REQUEST_TIMEOUT_MS < 120_000);
    assert.equal(loadS3Config({ CKPT_S3_REQUEST_TIMEOUT: '2s' }).requestTimeoutMs, 2000);
    assert.equal(loadS3Config({ CKPT_S3_REQUEST_TIMEOUT: '500ms' }).requestTimeoutMs, 500);
    for (const bad of ['soon', '0', '-1s'])
      assert.throws(
        () => loadS3Config({ CKPT_S3_REQUEST_TIMEOUT: bad }),
        (e: Error & { field?: string }) => e.field === 'CKPT_S3_REQUEST_TIMEOUT',
        bad,
      );
  });
});

describe('a server that accepts connections and never answers', () => {
  it('fails a CLI command with exit 1 and a line naming the endpoint, in about 3 x the limit', async () => {
    const silent = await silentServer();
    try {
      const started = Date.now();
      const run = await ckptAsync(['last-step', `s3://${server.bucket}/silent/d1`], {
        ...server.env(),
        AWS_ENDPOINT_URL: silent.endpoint,
        CKPT_S3_REQUEST_TIMEOUT: '1s',
      });
      const ms = Date.now() - started;
      assert.equal(run.code, 1, run.stderr);
      assert.ok(
        run.stderr.includes(
          `ckpt: error: cannot list s3://${server.bucket}/silent/d1: no answer from ${silent.endpoint}`,
        ),
        run.stderr,
      );
      assert.match(run.stderr, /within 1 s \(3 attempts\)/);
      assert.doesNotMatch(run.stderr, /--debug/);
      // 3 attempts of 1 s, plus the CLI's start (about a second) and the SDK's short backoff.
      assert.ok(ms < 10_000, `took ${ms} ms`);
    } finally {
      await silent.close();
    }
  });
});

describe('a server that hangs (SIGSTOP) mid-run', () => {
  const limit = { requestTimeoutMs: 500, maxAttempts: 2 };
  let store: S3Store;
  before(async () => {
    store = server.store('hung', limit);
    await saveCheckpoint(store.sub('d1'), 10, {
      model: tinyModel(1),
      optimizer: tinyOptimizer(1),
      meta: tinyMeta({ seed: 1 }),
    });
  });
  after(() => store.connection.destroy());

  it('fails reads, lists and writes as TransientStoreError (retried by activities) within the limit', async () => {
    server.pause();
    try {
      for (const [what, work] of [
        ['stat', () => store.stat('d1/manifest_000010.json')],
        ['list', () => store.list('d1')],
        ['read', () => store.read('d1/meta_000010.json')],
        ['write', () => store.put('d1/x.bin', Buffer.alloc(1024), { exclusive: true })],
      ] as const) {
        const { err, ms } = await failure(work());
        assertTransient(err, new RegExp(`no answer from ${server.endpoint} within 0.5 s \\(2 attempts\\)`));
        assert.equal(err.file?.startsWith('d1'), true, what);
        assert.ok(ms < 2 * 500 + 1500, `${what} took ${ms} ms`);
        const failed = activityFailure(err) as ApplicationFailure;
        assert.equal(failed.nonRetryable, false, `${what}: the activity retries it`);
        assert.equal(failed.type, 'TransientStoreError');
      }
    } finally {
      server.resume();
    }
    assert.equal((await store.stat('d1/manifest_000010.json'))?.key, 'd1/manifest_000010.json');
  });

  it('a multipart upload that stalls fails within its attempts plus one limit for the abort', async () => {
    const part = 5 << 20;
    const paused = { done: false };
    async function* source(): AsyncIterable<Uint8Array> {
      yield Buffer.alloc(part, 1);
      yield Buffer.alloc(part, 2);
      // The upload is under way (created, first parts sent): the server stops answering.
      server.pause();
      paused.done = true;
      yield Buffer.alloc(1024, 3);
    }
    const big = server.store('hung', { ...limit, partSize: part });
    try {
      const { err, ms } = await failure(big.put('d2/big.bin', source()));
      assert.equal(paused.done, true);
      assertTransient(err, /cannot write s3:\/\/.*\/hung\/d2\/big\.bin: no answer from/);
      // Parts go up in parallel, each with 2 attempts (plus a few seconds for their 5 MiB bodies), then
      // one bounded abort.
      assert.ok(ms < 2 * (500 + 5 * 4000) + 500 + 2000, `took ${ms} ms`);
    } finally {
      server.resume();
      big.connection.destroy();
    }
  });

  it('the async save thread reports it as the same TransientStoreError', async () => {
    const saver = new AsyncSaver({ storeConfig: server.options(limit) });
    // The main thread commits through configureS3, the thread writes through storeConfig.
    configureS3(server.options(limit));
    server.pause();
    try {
      await saver.save(`s3://${server.bucket}/hung/d3`, 10, {
        model: tinyModel(3),
        meta: tinyMeta({ seed: 3 }),
      });
      const { err } = await failure(saver.finish());
      assertTransient(err, /cannot \w+ s3:\/\/.*\/hung\/d3\/.*: no answer from/);
    } finally {
      server.resume();
      await saver.close().catch(() => undefined);
      configureS3();
    }
  });
});
