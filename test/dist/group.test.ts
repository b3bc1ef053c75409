/**
 * The process group within one process (every rank a group object over loopback TCP): framing, option
 * checks, rendezvous timeouts, mismatched collectives, close semantics. Fast; the cross-process behaviour
 * (bitwise results, killed ranks, exit without dangling handles) is in collectives/failures.test.ts.
 */
import assert from 'node:assert/strict';
import { createConnection, createServer } from 'node:net';
import { describe, it } from 'node:test';
import { FrameParser, Kind, encodeHeader } from '../../train/dist/framing';
import {
  CollectiveMismatchError,
  DistributedError,
  PeerLostError,
  ProcessGroupBrokenError,
  ProcessGroupClosedError,
  RendezvousError,
  initProcessGroup,
  optionsFromEnv,
  type ProcessGroup,
} from '../../train/dist';
import { freePort } from './spawn';

async function groups(
  w: number,
  extra: { timeoutMs?: number; chunkElements?: number } = {},
): Promise<ProcessGroup[]> {
  const port = await freePort();
  return Promise.all(
    Array.from({ length: w }, (_, rank) =>
      initProcessGroup({
        rank,
        worldSize: w,
        masterAddr: '127.0.0.1',
        masterPort: port,
        connectTimeoutMs: 5_000,
        timeoutMs: 5_000,
        ...extra,
      }),
    ),
  );
}
const closeAll = (gs: ProcessGroup[]) => Promise.all(gs.map((g) => g.close()));

describe('framing', () => {
  it('cuts the same frames out of a stream whatever the piece boundaries', () => {
    const frames = [0, 1, 13, 4096, 70_000].map((n, i) => {
      const payload = Buffer.alloc(n, i + 1);
      return { kind: Kind.Data, op: 2, seq: 1000 + i, aux: n, payload };
    });
    const stream = Buffer.concat(
      frames.flatMap((f) => [encodeHeader(f.kind, f.op, f.seq, f.aux, f.payload.length), f.payload]),
    );
    for (const piece of [1, 3, 14, 15, 1000, stream.length]) {
      const parser = new FrameParser();
      const got = [];
      for (let i = 0; i < stream.length; i += piece) got.push(...parser.push(stream.subarray(i, i + piece)));
      assert.equal(got.length, frames.length, `piece ${piece}`);
      got.forEach((f, i) => {
        const want = frames[i]!;
        assert.deepEqual([f.kind, f.op, f.seq, f.aux], [want.kind, want.op, want.seq, want.aux]);
        assert.ok(Buffer.from(f.payload).equals(want.payload));
        assert.equal(f.payload.byteOffset, 0, 'own buffer, so float32 views are aligned');
      });
    }
  });

  it('refuses a frame header announcing more than the maximum size', () => {
    assert.throws(() => new FrameParser().push(encodeHeader(Kind.Data, 0, 0, 0, 0xffffffff)), /larger than/);
  });
});

describe('process group options and rendezvous', () => {
  it('world size 1 needs no network, and every collective is the identity', async () => {
    const [g] = await groups(1);
    const data = Float32Array.from([1.5, -2, 3]);
    assert.equal(await g!.allReduce(data, 'mean'), data);
    assert.deepEqual(Array.from(data), [1.5, -2, 3]);
    assert.deepEqual(Array.from(await g!.reduceScatter(data, [3])), [1.5, -2, 3]);
    assert.deepEqual(Array.from(await g!.allGather(data, [3])), [1.5, -2, 3]);
    assert.deepEqual(await g!.gatherJson({ a: 1 }), [{ a: 1 }]);
    assert.equal(await g!.broadcastJson('x'), 'x');
    await g!.barrier();
    await g!.close();
    await assert.rejects(g!.barrier(), ProcessGroupClosedError);
  });

  it('bad options are RendezvousError invalid-options (exit code 2)', async () => {
    const base = { masterAddr: '127.0.0.1', masterPort: 29500 };
    for (const o of [
      { rank: 2, worldSize: 2 },
      { rank: 0, worldSize: 0 },
      { rank: 0, worldSize: 2, masterPort: 0 },
      { rank: 0, worldSize: 2, timeoutMs: -1 },
    ]) {
      await assert.rejects(initProcessGroup({ ...base, ...o }), (err: unknown) => {
        assert.ok(err instanceof RendezvousError && err.reason === 'invalid-options', String(err));
        assert.equal(err.exitCode, 2);
        return true;
      });
    }
  });

  it('reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT', () => {
    assert.deepEqual(optionsFromEnv({ RANK: '1', WORLD_SIZE: '4', MASTER_ADDR: 'h', MASTER_PORT: '29500' }), {
      rank: 1,
      worldSize: 4,
      masterAddr: 'h',
      masterPort: 29500,
    });
    assert.equal(optionsFromEnv({}).worldSize, 1);
    assert.throws(
      () => optionsFromEnv({ RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: 'h' }),
      /MASTER_PORT is not set/,
    );
  });

  it('a rank whose master never appears fails with a timeout after connectTimeoutMs', async () => {
    const port = await freePort();
    const t0 = Date.now();
    await assert.rejects(
      initProcessGroup({
        rank: 1,
        worldSize: 2,
        masterAddr: '127.0.0.1',
        masterPort: port,
        connectTimeoutMs: 600,
      }),
      (err: unknown) =>
        err instanceof RendezvousError &&
        err.reason === 'timeout' &&
        /could not reach the master/.test(err.message),
    );
    const ms = Date.now() - t0;
    assert.ok(ms >= 550 && ms < 2_500, `${ms} ms`);
  });

  it('rank 0 names the ranks that never joined', async () => {
    const port = await freePort();
    const opts = { worldSize: 3, masterAddr: '127.0.0.1', masterPort: port, connectTimeoutMs: 800 };
    const results = await Promise.allSettled([
      initProcessGroup({ ...opts, rank: 0 }),
      initProcessGroup({ ...opts, rank: 1 }),
    ]);
    const [r0, r1] = results.map((r) => (r.status === 'rejected' ? (r.reason as Error) : null));
    assert.ok(r0 instanceof RendezvousError && r0.reason === 'timeout', String(r0));
    assert.match(r0.message, /ranks \[2\] of world size 3 did not join/);
    assert.ok(r1 instanceof RendezvousError, String(r1)); // told by rank 0, or timed out itself
  });

  it('ranks that start before rank 0 keep retrying until it listens (MASTER_ADDR given as a host name)', async () => {
    const port = await freePort();
    const opts = { worldSize: 3, masterAddr: 'localhost', masterPort: port, connectTimeoutMs: 5_000 };
    const early = [1, 2].map((rank) => initProcessGroup({ ...opts, rank }));
    await new Promise((res) => setTimeout(res, 400));
    const gs = await Promise.all([initProcessGroup({ ...opts, rank: 0 }), ...early]);
    const sums = await Promise.all(gs.map((g) => g.allReduce(Float32Array.of(g.rank, 1))));
    for (const s of sums) assert.deepEqual(Array.from(s), [3, 3]);
    await closeAll(gs);
  });

  it('a port already in use is address-in-use', async () => {
    const port = await freePort();
    const blocker = createServer().listen(port, '127.0.0.1');
    await new Promise((res) => blocker.once('listening', res));
    await assert.rejects(
      initProcessGroup({
        rank: 0,
        worldSize: 2,
        masterAddr: '127.0.0.1',
        masterPort: port,
        connectTimeoutMs: 500,
      }),
      (err: unknown) => err instanceof RendezvousError && err.reason === 'address-in-use',
    );
    blocker.close();
  });

  it('a stray client on the master port (garbage, or silence) does not disturb the rendezvous', async () => {
    const port = await freePort();
    const opts = { worldSize: 2, masterAddr: '127.0.0.1', masterPort: port, connectTimeoutMs: 5_000 };
    const g0 = initProcessGroup({ ...opts, rank: 0 });
    await new Promise((res) => setTimeout(res, 100));
    const garbage = createConnection({ host: '127.0.0.1', port }, () =>
      garbage.write('GET / HTTP/1.1\r\n\r\n'),
    );
    const silent = createConnection({ host: '127.0.0.1', port });
    garbage.on('error', () => undefined);
    silent.on('error', () => undefined);
    const gs = await Promise.all([g0, initProcessGroup({ ...opts, rank: 1 })]);
    assert.deepEqual(
      Array.from(await Promise.all(gs.map((g) => g.allReduce(Float32Array.of(g.rank + 1)))), (a) => a[0]),
      [3, 3],
    );
    await closeAll(gs);
    garbage.destroy();
    silent.destroy();
  });
});

describe('collective semantics', () => {
  it('ops called back to back without awaiting run in call order', async () => {
    const gs = await groups(3, { chunkElements: 3 });
    const out = await Promise.all(
      gs.map((g) =>
        Promise.all([
          g.allReduce(Float32Array.from({ length: 10 }, (_, i) => i * (g.rank + 1))),
          g.broadcast(Float32Array.of(g.rank, g.rank), 2),
          g.gatherJson(g.rank * 10, 1),
          g.allGather(
            Float32Array.from({ length: g.rank }, () => g.rank),
            [0, 1, 2],
          ),
        ]),
      ),
    );
    for (const [rank, [sum, bc, gathered, all]] of out.entries()) {
      assert.deepEqual(
        Array.from(sum),
        Array.from({ length: 10 }, (_, i) => i * 6),
      );
      assert.deepEqual(Array.from(bc), [2, 2]);
      assert.deepEqual(gathered, rank === 1 ? [0, 10, 20] : null);
      assert.deepEqual(Array.from(all), [1, 2, 2]);
    }
    await closeAll(gs);
  });

  it('ranks calling different collectives fail with a mismatch, not garbage', async () => {
    const gs = await groups(3);
    const settled = await Promise.allSettled(
      gs.map((g) => (g.rank === 0 ? g.allReduce(new Float32Array(4)) : g.barrier())),
    );
    const errors = settled.map((s) => (s.status === 'rejected' ? (s.reason as Error) : null));
    for (const e of errors) assert.ok(e instanceof DistributedError, String(e));
    assert.ok(
      errors.some(
        (e) => e instanceof CollectiveMismatchError && /same collectives in the same order/.test(e.message),
      ),
    );
    for (const g of gs) await assert.rejects(g.barrier(), ProcessGroupBrokenError);
    await closeAll(gs);
  });

  it('different counts on different ranks are a mismatch', async () => {
    const gs = await groups(2);
    const settled = await Promise.allSettled(
      gs.map((g) => g.allGather(new Float32Array(2), g.rank === 0 ? [2, 2] : [1, 2])),
    );
    assert.ok(settled.every((s) => s.status === 'rejected'));
    assert.ok(
      settled.some(
        (s) =>
          s.status === 'rejected' &&
          s.reason instanceof CollectiveMismatchError &&
          /element count differs/.test(s.reason.message),
      ),
    );
    await closeAll(gs);
  });

  it('a peer that closed its group makes the next collective fail at once, naming it', async () => {
    const gs = await groups(2);
    await gs[1]!.close();
    const t0 = Date.now();
    await assert.rejects(
      gs[0]!.barrier(),
      (err: unknown) =>
        err instanceof PeerLostError && err.peer === 1 && /closed its process group/.test(err.message),
    );
    assert.ok(Date.now() - t0 < 1_000);
    await assert.rejects(gs[0]!.barrier(), ProcessGroupBrokenError);
    await gs[0]!.close();
  });

  it('close() during a collective rejects it as closed', async () => {
    const gs = await groups(2);
    const pending = gs[0]!.allReduce(new Float32Array(8)); // rank 1 never joins this one
    await new Promise((res) => setTimeout(res, 50));
    await gs[0]!.close();
    await assert.rejects(pending, ProcessGroupClosedError);
    await gs[1]!.close();
  });

  it('the coordinator refuses a rank that is not the group rank, and the other ranks learn at once', async () => {
    const gs = await groups(2);
    const files = { a: { bytes: 1, sha256: '0'.repeat(64) } };
    const settled = await Promise.allSettled([
      gs[0]!.coordinator().gatherFileRecords(5, 0, 2, files),
      gs[1]!.coordinator().gatherFileRecords(5, 0, 2, files),
    ]);
    const [e0, e1] = settled.map((s) => (s.status === 'rejected' ? (s.reason as Error) : null));
    assert.ok(
      e1 instanceof CollectiveMismatchError &&
        /rank 0 of 2, but this process group is rank 1/.test(e1.message),
      String(e1),
    );
    assert.ok(e0 instanceof DistributedError && /rank 1 aborted/.test(e0.message), String(e0));
    await closeAll(gs);
  });
});
