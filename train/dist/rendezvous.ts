/**
 * Rendezvous: turn W processes that know only (rank, world size, master address) into a full mesh of TCP
 * connections, one per pair of ranks.
 *
 * 1. Rank 0 listens on MASTER_ADDR:MASTER_PORT. Every other rank connects (retrying until the connect
 *    timeout: rank 0 may start last), opens a listening socket of its own on the interface it reached the
 *    master through, and sends Hello {rank, worldSize, host, port}.
 * 2. Rank 0 checks each Hello: another world size, a rank out of range or a rank that already joined fail
 *    the whole rendezvous at once (Reject to the offender, Abort to the others) — a misconfigured job
 *    should stop with a clear message, not wait for a rank that will never come.
 * 3. When all W-1 have joined, rank 0 sends everyone the address table and a random session id. Rank r
 *    connects to ranks 1..r-1 and accepts ranks r+1..W-1 (MeshHello carries the session id, so a stray
 *    connection is dropped), then sends Ready. When all are Ready, rank 0 sends Go and everyone returns.
 * The connections to rank 0 are the rendezvous sockets themselves.
 */
import { randomBytes } from 'node:crypto';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { Conn, type Frame, Kind } from './framing';
import { RendezvousError } from './errors';

export interface RendezvousOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  connectTimeoutMs: number;
}

const PROTOCOL = 'train-dist/1';

interface Hello {
  protocol: string;
  rank: number;
  worldSize: number;
  host: string;
  port: number;
}
interface Peers {
  session: string;
  peers: Array<{ host: string; port: number } | null>;
}

export function jsonPayload(value: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(value) ?? 'null', 'utf8');
}
export function parseJson(frame: Frame): unknown {
  return JSON.parse(
    Buffer.from(frame.payload.buffer, frame.payload.byteOffset, frame.payload.byteLength).toString('utf8'),
  );
}

/** One rendezvous attempt: the first failure wins, and every wait races against it. */
class Attempt {
  error: Error | null = null;
  private rejectFailed!: (err: Error) => void;
  readonly failed = new Promise<never>((_, reject) => (this.rejectFailed = reject));
  readonly conns = new Set<Conn>();
  readonly servers: Server[] = [];
  constructor() {
    this.failed.catch(() => undefined);
  }
  fail(err: Error): void {
    if (this.error) return;
    this.error = err;
    this.rejectFailed(err);
  }
  step<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.failed]);
  }
  /** Tear down everything this attempt opened; tell connected peers why first. */
  async cleanUp(reason: string | null): Promise<void> {
    for (const s of this.servers) s.close();
    await Promise.all(
      [...this.conns].map(async (c) => {
        if (reason !== null && !c.ended)
          await c.send(Kind.Abort, 0, 0, 0, jsonPayload({ message: reason })).catch(() => undefined);
        await c.close(200);
      }),
    );
  }
}

/** Returns one connection per rank (null at our own index), all handshaken and Ready. */
export async function rendezvous(o: RendezvousOptions): Promise<Array<Conn | null>> {
  if (o.worldSize === 1) return [null];
  const attempt = new Attempt();
  const timer = setTimeout(
    () =>
      attempt.fail(
        new RendezvousError('timeout', `rank ${o.rank}: ${waitingFor()} within ${o.connectTimeoutMs} ms`),
      ),
    o.connectTimeoutMs,
  );
  let progress = `could not reach the master at ${o.masterAddr}:${o.masterPort}`;
  const waitingFor = () => progress;
  try {
    const conns = await (o.rank === 0
      ? master(o, attempt, (p) => (progress = p))
      : worker(o, attempt, (p) => (progress = p)));
    for (const s of attempt.servers) s.close();
    for (const c of attempt.conns) if (!conns.includes(c)) c.destroy(); // strays still in their handshake
    return conns;
  } catch (err) {
    attempt.fail(err as Error);
    await attempt.cleanUp(attempt.error!.message);
    throw attempt.error;
  } finally {
    clearTimeout(timer);
  }
}

async function master(
  o: RendezvousOptions,
  a: Attempt,
  progress: (p: string) => void,
): Promise<Array<Conn | null>> {
  const W = o.worldSize;
  const server = createServer();
  a.servers.push(server);
  await a.step(listen(server, o.masterPort, o.masterAddr));
  const conns: Array<Conn | null> = new Array<Conn | null>(W).fill(null);
  const addrs: Peers['peers'] = new Array<Peers['peers'][number]>(W).fill(null);
  let peersSent = false;
  const missing = () => conns.map((c, r) => (r > 0 && !c ? r : -1)).filter((r) => r >= 0);
  progress(`ranks [${missing().join(', ')}] of world size ${W} did not join ${o.masterAddr}:${o.masterPort}`);
  let allJoined!: () => void;
  const joined = new Promise<void>((resolve) => (allJoined = resolve));

  const refuse = async (conn: Conn, reason: RendezvousError['reason'], message: string) => {
    a.conns.delete(conn); // it gets a Reject, not the Abort the others get
    await conn.send(Kind.Reject, 0, 0, 0, jsonPayload({ reason, message })).catch(() => undefined);
    void conn.close(500);
    a.fail(new RendezvousError(reason, `rank 0: ${message}`));
  };

  server.on('connection', (socket: Socket) => {
    const conn = new Conn(socket);
    a.conns.add(conn);
    conn.handlers.onLost = (c) => {
      if (c.peer < 0 || conns[c.peer] !== c) return;
      // Before the address table went out, a rank may drop and come back (restarted); after, it is fatal.
      if (!peersSent) conns[c.peer] = null;
      else a.fail(new RendezvousError('aborted', `rank 0: rank ${c.peer} disconnected during rendezvous`));
    };
    conn.handlers.onControl = (c, f) => {
      if (f.kind !== Kind.Abort || c.peer < 0) return;
      const { message } = parseJson(f) as { message?: string };
      a.fail(
        new RendezvousError(
          'aborted',
          `rank 0: rank ${c.peer} aborted the rendezvous: ${message ?? 'no reason given'}`,
        ),
      );
    };
    void (async () => {
      let hello: Hello;
      try {
        const f = await a.step(withTimeout(conn.recv(), Math.min(o.connectTimeoutMs, 10_000)));
        hello = parseJson(f) as Hello;
        if (f.kind !== Kind.Hello || hello?.protocol !== PROTOCOL) throw new Error('not a rank');
      } catch {
        a.conns.delete(conn);
        conn.destroy(); // a stray client or a scanner: not ours, not fatal
        return;
      }
      const { rank, worldSize } = hello;
      if (worldSize !== W) {
        return refuse(
          conn,
          'world-size-mismatch',
          `rank ${rank} (${conn.remote}) was started with world size ${worldSize}, but rank 0 has world size ${W}; every rank must get the same WORLD_SIZE`,
        );
      }
      if (!Number.isSafeInteger(rank) || rank < 0 || rank >= W) {
        return refuse(
          conn,
          'rank-out-of-range',
          `a process (${conn.remote}) announced rank ${rank}, outside [0, ${W})`,
        );
      }
      const holder = rank === 0 ? 'this process (rank 0)' : conns[rank]?.remote;
      if (holder) {
        return refuse(
          conn,
          'duplicate-rank',
          `rank ${rank} was claimed twice: by ${holder} and by ${conn.remote}; every process needs its own RANK`,
        );
      }
      conn.peer = rank;
      conns[rank] = conn;
      addrs[rank] = { host: hello.host, port: hello.port };
      progress(
        `ranks [${missing().join(', ')}] of world size ${W} did not join ${o.masterAddr}:${o.masterPort}`,
      );
      if (missing().length === 0) allJoined();
    })();
  });

  await a.step(joined);
  peersSent = true;
  const session = randomBytes(16).toString('hex');
  const live = conns.filter((c): c is Conn => c !== null);
  progress(`the ranks of world size ${W} did not finish connecting to each other`);
  await a.step(
    Promise.all(
      live.map((c) => c.send(Kind.Peers, 0, 0, 0, jsonPayload({ session, peers: addrs } satisfies Peers))),
    ),
  );
  await a.step(Promise.all(live.map(async (c) => expect(await c.recv(), Kind.Ready, c.peer))));
  server.close();
  await a.step(Promise.all(live.map((c) => c.send(Kind.Go, 0, 0, 0))));
  for (const c of live) c.handlers = {};
  return conns;
}

async function worker(
  o: RendezvousOptions,
  a: Attempt,
  progress: (p: string) => void,
): Promise<Array<Conn | null>> {
  const { rank: r, worldSize: W } = o;
  const socket = await connectWithRetry(o.masterAddr, o.masterPort, a);
  const m = new Conn(socket);
  m.peer = 0;
  a.conns.add(m);
  const conns: Array<Conn | null> = new Array<Conn | null>(W).fill(null);
  conns[0] = m;
  const watch = (c: Conn) => {
    c.handlers.onLost = (_c, err) =>
      a.fail(
        new RendezvousError(
          c.peer === 0 ? 'master-lost' : 'aborted',
          `rank ${r}: ${err.message} during rendezvous`,
        ),
      );
    c.handlers.onControl = (_c, f) => {
      if (f.kind !== Kind.Abort) return;
      const { message } = parseJson(f) as { message?: string };
      a.fail(
        new RendezvousError(
          'aborted',
          `rank ${r}: rank ${c.peer} aborted the rendezvous: ${message ?? 'no reason given'}`,
        ),
      );
    };
  };
  watch(m);

  // Listen where the master saw us coming from: that interface is the one the other ranks can reach.
  const host = socket.localAddress ?? o.masterAddr;
  const server = createServer();
  a.servers.push(server);
  await a.step(listen(server, 0, host));
  const port = (server.address() as { port: number }).port;

  let knowSession!: (s: string) => void;
  const sessionKnown = new Promise<string>((resolve) => (knowSession = resolve));
  let meshDone!: () => void;
  const mesh = new Promise<void>((resolve) => (meshDone = resolve));
  const checkMesh = () => conns.every((c, i) => i === r || c !== null) && meshDone();

  server.on('connection', (s: Socket) => {
    const conn = new Conn(s);
    a.conns.add(conn);
    void (async () => {
      try {
        const f = await a.step(withTimeout(conn.recv(), o.connectTimeoutMs));
        const hello = parseJson(f) as { session?: string; rank?: number };
        const session = await a.step(sessionKnown);
        const from = hello?.rank;
        if (f.kind !== Kind.MeshHello || hello.session !== session || typeof from !== 'number')
          throw new Error('stray');
        if (!(from > r && from < W) || conns[from]) throw new Error('unexpected rank');
        conn.peer = from;
        conns[from] = conn;
        watch(conn);
        checkMesh();
      } catch {
        a.conns.delete(conn);
        conn.destroy();
      }
    })();
  });

  progress(`rank 0 at ${o.masterAddr}:${o.masterPort} did not send the address table (ranks missing?)`);
  await a.step(
    m.send(
      Kind.Hello,
      0,
      0,
      0,
      jsonPayload({ protocol: PROTOCOL, rank: r, worldSize: W, host, port } satisfies Hello),
    ),
  );
  const reply = await a.step(m.recv());
  if (reply.kind === Kind.Reject) {
    const { reason, message } = parseJson(reply) as { reason: RendezvousError['reason']; message: string };
    throw new RendezvousError(reason, `rank ${r}: rejected by rank 0: ${message}`);
  }
  expect(reply, Kind.Peers, 0);
  const { session, peers } = parseJson(reply) as Peers;
  knowSession(session);

  progress(`rank ${r} could not connect to every other rank`);
  await a.step(
    Promise.all(
      peers.slice(1, r).map(async (addr, i) => {
        const s = i + 1;
        const conn = new Conn(await connectWithRetry(addr!.host, addr!.port, a));
        conn.peer = s;
        a.conns.add(conn);
        watch(conn);
        conns[s] = conn;
        await conn.send(Kind.MeshHello, 0, 0, 0, jsonPayload({ session, rank: r }));
      }),
    ),
  );
  checkMesh();
  await a.step(mesh);
  server.close();
  progress(`rank 0 did not confirm that all ranks are connected`);
  await a.step(m.send(Kind.Ready, 0, 0, 0));
  expect(await a.step(m.recv()), Kind.Go, 0);
  for (const c of conns) if (c) c.handlers = {};
  return conns;
}

function expect(f: Frame, kind: number, from: number): void {
  if (f.kind !== kind)
    throw new RendezvousError(
      'aborted',
      `unexpected frame kind ${f.kind} from rank ${from} during rendezvous (wanted ${kind})`,
    );
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const reason = err.code === 'EADDRINUSE' ? 'address-in-use' : 'invalid-options';
      reject(new RendezvousError(reason, `cannot listen on ${host}:${port}: ${err.message}`, { cause: err }));
    });
    server.listen(port, host, () => resolve());
  });
}

/** Connect, retrying refused or unreachable attempts with a growing pause, until the attempt fails. */
async function connectWithRetry(host: string, port: number, a: Attempt): Promise<Socket> {
  let pause = 25;
  for (;;) {
    if (a.error) throw a.error;
    const socket = await new Promise<Socket | null>((resolve) => {
      const s = createConnection({ host, port });
      const onError = () => {
        s.destroy();
        resolve(null);
      };
      s.once('error', onError);
      s.once('connect', () => {
        s.off('error', onError);
        resolve(s);
      });
      a.failed.catch(() => s.destroyed || onError());
    });
    if (socket) return socket;
    await a.step(new Promise((res) => setTimeout(res, pause)));
    pause = Math.min(pause * 2, 500);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('timed out')), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
