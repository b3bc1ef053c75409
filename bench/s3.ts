/**
 * S3 benchmark (`npm run bench:s3`): one run against one local S3 server (versitygw, posix backend in a temp
 * dir, started by test/helpers/s3-server.ts), one ~512 MiB safetensors file, every contender.
 *
 *   upload:   ours S3Store.put (exclusive, crc32 of the whole object, SHA-256 checksum per part)
 *             vs @aws-sdk/lib-storage `new Upload({ client, params: { Bucket, Key, Body: stream } })` with its
 *             defaults (5 MiB parts, 4 at a time); both read the same file through fs.createReadStream
 *   download: ours S3Store.stream (parallel ranged GETs) without and with crc32 (what a verified load does)
 *             vs one GetObject whose body is streamed to the end
 *   throttled: the same downloads through a proxy process that caps each connection at
 *             BENCH_S3_THROTTLE_MIBS (32) MiB/s, as latency and TCP windows cap one connection to a remote
 *             endpoint; on loopback nothing limits a single connection but the CPU, which both sides share
 *
 * Each contender runs BENCH_S3_ROUNDS times, the order rotating every round; the table shows MiB/s as
 * median (min–max) and the ratio of medians. Next to wall time it shows the CPU seconds this process and the
 * server used: on loopback the server shares the machine's cores with the client.
 * Both contenders use the same client settings (checkpoint/s3-settings.ts createClient: no SDK default
 * CRC32 trailers, which is also what lib-storage sees), each with its own connection pool.
 *
 * Knobs (environment): BENCH_S3_MIB (512), BENCH_S3_ROUNDS (3), BENCH_S3_READ_KIB (1024: the read stream's
 * chunk size), BENCH_S3_SWEEP=1 (also time ours with other part/range sizes and concurrencies, and
 * without checksums; BENCH_S3_SWEEP_ROUNDS, default 2), BENCH_S3_ONLY (upload,download,throttled),
 * BENCH_S3_THROTTLE_MIBS (32; 0 skips the throttled table).
 * The data file and the server's directory live in os.tmpdir() and are deleted at the end.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { S3Connection, S3Store, type S3StoreOptions } from '../checkpoint';
import { FileDigest, RECORDED_CHECKSUM, sameContent, type FileRecord } from '../checkpoint/checksum';
import { safetensorsChunks } from '../checkpoint/safetensors-format';
import type { NamedTensors } from '../checkpoint/tensors';
import { startS3Server, type S3TestServer } from '../test/helpers/s3-server';
import { findProcess, processCpuSeconds } from './lib/cpu-time';
import { startThrottleProxy } from './lib/throttle-proxy';
import { fmtSpread, spread, type Spread } from './lib/spread';
import { fmt, markdownTable, MiB } from './lib/stats';
import { fullGc, machineInfo } from './lib/system';

const SIZE_MIB = Number(process.env.BENCH_S3_MIB ?? 512);
const ROUNDS = Number(process.env.BENCH_S3_ROUNDS ?? 3);
const READ_CHUNK = Number(process.env.BENCH_S3_READ_KIB ?? 1024) * 1024;
const SWEEP = process.env.BENCH_S3_SWEEP === '1';
const SWEEP_ROUNDS = Number(process.env.BENCH_S3_SWEEP_ROUNDS ?? 2);
const ONLY = new Set((process.env.BENCH_S3_ONLY ?? 'upload,download,throttled').split(','));
const THROTTLE_MIBS = Number(process.env.BENCH_S3_THROTTLE_MIBS ?? 32);
const TENSOR_MIB = 8;

interface Sample {
  seconds: number;
  clientCpu: number;
  serverCpu: number;
}

interface Result {
  name: string;
  samples: Sample[];
}

// ------------------------------------------------------------------------------------------ the file

/**
 * A safetensors file of `mib` MiB of f32 tensors (8 MiB each) with deterministic, incompressible-looking
 * values (xorshift32), written to `path`. Returns its size, crc32 and sha256.
 */
async function makeFile(path: string, mib: number): Promise<FileRecord> {
  const tensors: NamedTensors = {};
  const count = Math.max(1, Math.round(mib / TENSOR_MIB));
  const floats = (TENSOR_MIB * MiB) / 4;
  for (let i = 0; i < count; i++) {
    const data = new Float32Array(floats);
    const words = new Uint32Array(data.buffer);
    let s = (0x9e3779b9 ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0 || 1;
    for (let j = 0; j < floats; j++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      // Keep the exponent in a sane range (values in ±[1, 2)) so the bytes look like weights, not noise NaNs.
      words[j] = (s & 0x807fffff) | 0x3f800000;
    }
    tensors[`layers.${String(i).padStart(3, '0')}.weight`] = {
      dtype: 'F32',
      shape: [floats / 1024, 1024],
      data,
    };
  }
  const out = createWriteStream(path);
  const digest = new FileDigest(['crc32', 'sha256']);
  for (const chunk of safetensorsChunks(tensors).chunks) {
    digest.update(chunk);
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return digest.record();
}

const fileStream = (path: string) => createReadStream(path, { highWaterMark: READ_CHUNK });

// ---------------------------------------------------------------------------------------- measuring

async function measure(serverPid: number | null, fn: () => Promise<void>): Promise<Sample> {
  fullGc();
  const server0 = serverPid === null ? NaN : processCpuSeconds(serverPid);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const server1 = serverPid === null ? NaN : processCpuSeconds(serverPid);
  return { seconds, clientCpu: (cpu.user + cpu.system) / 1e6, serverCpu: server1 - server0 };
}

function mibPerSecond(bytes: number, r: Result): Spread {
  return spread(r.samples.map((s) => bytes / MiB / s.seconds));
}

function row(bytes: number, r: Result, baseline: Result | null): string[] {
  const speed = mibPerSecond(bytes, r);
  const ratio = baseline ? speed.median / mibPerSecond(bytes, baseline).median : NaN;
  return [
    r.name,
    fmtSpread(spread(r.samples.map((s) => s.seconds)), 2),
    fmtSpread(speed, 0),
    baseline ? `${fmt(ratio, 2)}×` : '1.00× (baseline)',
    fmt(spread(r.samples.map((s) => s.clientCpu)).median, 2),
    fmt(spread(r.samples.map((s) => s.serverCpu)).median, 2),
  ];
}

const HEADER = [
  'contender',
  'seconds median (min–max)',
  'MiB/s median (min–max)',
  'ratio (medians)',
  'client CPU s',
  'server CPU s',
];

// ---------------------------------------------------------------------------------------- contenders

interface Ctx {
  server: S3TestServer;
  serverPid: number | null;
  file: string;
  bytes: number;
  record: FileRecord;
}

async function deleteKey(conn: S3Connection, bucket: string, key: string): Promise<void> {
  await conn.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
}

async function oursUpload(ctx: Ctx, conn: S3Connection, prefix: string): Promise<Sample> {
  const store = new S3Store(`s3://${ctx.server.bucket}/${prefix}`, conn);
  const key = `up-${randomBytes(4).toString('hex')}.safetensors`;
  let got: FileRecord | undefined;
  const sample = await measure(ctx.serverPid, async () => {
    got = await store.put(key, fileStream(ctx.file), { exclusive: true });
  });
  if (!got || !sameContent(got, ctx.record)) throw new Error(`ours uploaded ${JSON.stringify(got)}`);
  await deleteKey(conn, ctx.server.bucket, `${prefix}/${key}`);
  return sample;
}

async function libStorageUpload(ctx: Ctx, conn: S3Connection): Promise<Sample> {
  const key = `bench/lib-${randomBytes(4).toString('hex')}.safetensors`;
  const sample = await measure(ctx.serverPid, async () => {
    const upload = new Upload({
      client: conn.client,
      params: { Bucket: ctx.server.bucket, Key: key, Body: fileStream(ctx.file) },
    });
    await upload.done();
  });
  await deleteKey(conn, ctx.server.bucket, key);
  return sample;
}

async function oursDownload(ctx: Ctx, store: S3Store, key: string, hashing: boolean): Promise<Sample> {
  let got: FileRecord = { bytes: 0 };
  const sample = await measure(ctx.serverPid, async () => {
    const digest = new FileDigest(hashing ? [RECORDED_CHECKSUM] : []);
    for await (const chunk of store.stream(key)) digest.update(chunk);
    got = digest.record();
  });
  if (got.bytes !== ctx.bytes || (hashing && !sameContent(got, ctx.record)))
    throw new Error(`ours read ${JSON.stringify(got)}`);
  return sample;
}

async function singleGet(ctx: Ctx, conn: S3Connection, objectKey: string): Promise<Sample> {
  let bytes = 0;
  const sample = await measure(ctx.serverPid, async () => {
    const res = await conn.client.send(new GetObjectCommand({ Bucket: ctx.server.bucket, Key: objectKey }));
    for await (const chunk of res.Body as AsyncIterable<Uint8Array>) bytes += chunk.byteLength;
  });
  if (bytes !== ctx.bytes) throw new Error(`single GET read ${bytes} bytes`);
  return sample;
}

/** Run each contender `rounds` times, rotating the order every round so none always goes first. */
async function rounds(rounds: number, contenders: Array<[string, () => Promise<Sample>]>): Promise<Result[]> {
  const results = contenders.map(([name]) => ({ name, samples: [] as Sample[] }));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < contenders.length; i++) {
      const j = (i + r) % contenders.length;
      const sample = await contenders[j]![1]();
      results[j]!.samples.push(sample);
      process.stderr.write(`  round ${r + 1}: ${contenders[j]![0]}: ${fmt(sample.seconds, 2)} s\n`);
    }
  }
  return results;
}

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  // The SDK warns once per process that it will need node 22 next year: noise in a benchmark's output.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const m = machineInfo();
  const work = mkdtempSync(join(tmpdir(), 'ckpt-bench-s3-'));
  const server = await startS3Server();
  const connections: S3Connection[] = [];
  const connect = (extra: S3StoreOptions = {}) => {
    const conn = new S3Connection(server.options(extra));
    connections.push(conn);
    return conn;
  };
  try {
    const serverPid = findProcess([
      server.kind === 'versitygw' ? 'versitygw' : 'moto',
      server.endpoint.split(':').pop()!,
    ]);
    const file = join(work, 'model.safetensors');
    process.stderr.write(`writing ${SIZE_MIB} MiB of tensors to a temp file...\n`);
    const record = await makeFile(file, SIZE_MIB);
    const { bytes } = record;
    fullGc();
    const ctx: Ctx = { server, serverPid, file, bytes, record };
    const load = loadavg()
      .map((l) => l.toFixed(1))
      .join(' ');
    const lines: string[] = [];
    const say = (s = '') => {
      lines.push(s);
      console.log(s);
    };
    say(
      `bench:s3 — ${(bytes / MiB).toFixed(1)} MiB safetensors file, ${ROUNDS} rounds per contender, read stream chunks of ${READ_CHUNK / 1024} KiB`,
    );
    say(
      `server: ${server.kind} (posix backend, temp dir) on ${server.endpoint}; machine: ${m.cpuModel}, ${m.nproc} cores, ` +
        `${m.memoryGiB.toFixed(0)} GiB, node ${m.node}, ${m.os}; load average at start ${load}`,
    );
    if (serverPid === null) say('(server process not found: server CPU not measured)');

    const oursConn = connect();
    const libConn = connect();
    if (ONLY.has('upload')) {
      say('');
      say('### Upload');
      say('');
      const results = await rounds(ROUNDS, [
        ['ours S3Store.put (exclusive, crc32, 16 MiB parts × 4)', () => oursUpload(ctx, oursConn, 'bench')],
        ['lib-storage Upload (defaults: 5 MiB parts × 4)', () => libStorageUpload(ctx, libConn)],
      ]);
      say(markdownTable(HEADER, [row(bytes, results[0]!, results[1]!), row(bytes, results[1]!, null)]));
    }

    if (ONLY.has('download')) {
      const key = 'download.safetensors';
      const store = new S3Store(`s3://${server.bucket}/bench`, oursConn);
      await store.put(key, fileStream(file));
      say('');
      say('### Download');
      say('');
      const results = await rounds(ROUNDS, [
        ['ours S3Store.stream (8 MiB ranges × 4), no hashing', () => oursDownload(ctx, store, key, false)],
        ['ours S3Store.stream + crc32 (verified read)', () => oursDownload(ctx, store, key, true)],
        ['single GetObject streamed to the end', () => singleGet(ctx, libConn, `bench/${key}`)],
      ]);
      const base = results[2]!;
      say(
        markdownTable(HEADER, [
          row(bytes, results[0]!, base),
          row(bytes, results[1]!, base),
          row(bytes, base, null),
        ]),
      );
    }

    if (ONLY.has('throttled') && THROTTLE_MIBS > 0) {
      // The same downloads through a proxy that caps every connection, as a remote endpoint does.
      const proxy = await startThrottleProxy(Number(new URL(server.endpoint).port), THROTTLE_MIBS * MiB);
      try {
        const far = connect({ endpoint: `http://127.0.0.1:${proxy.port}` });
        const store = new S3Store(`s3://${server.bucket}/bench`, far);
        const key = 'download.safetensors';
        if (!ONLY.has('download')) await store.put(key, fileStream(file));
        say('');
        say(
          `### Download with each connection capped at ${THROTTLE_MIBS} MiB/s (a proxy process; a remote endpoint)`,
        );
        say('');
        const results = await rounds(ROUNDS, [
          ['ours S3Store.stream (8 MiB ranges × 4), no hashing', () => oursDownload(ctx, store, key, false)],
          ['ours S3Store.stream + crc32 (verified read)', () => oursDownload(ctx, store, key, true)],
          ['single GetObject streamed to the end', () => singleGet(ctx, far, `bench/${key}`)],
        ]);
        const base = results[2]!;
        say(
          markdownTable(HEADER, [
            row(bytes, results[0]!, base),
            row(bytes, results[1]!, base),
            row(bytes, base, null),
          ]),
        );
      } finally {
        proxy.stop();
      }
    }

    if (SWEEP) {
      say('');
      say(
        `### Tuning sweep (ours only, ${SWEEP_ROUNDS} rounds each; ratio against the first row of each table)`,
      );
      if (ONLY.has('upload')) {
        const settings: Array<[string, S3StoreOptions]> = [];
        for (const partMiB of [8, 16, 32, 64]) {
          for (const uploadConcurrency of [2, 4, 8]) {
            settings.push([
              `put ${partMiB} MiB parts × ${uploadConcurrency}`,
              { partSize: partMiB * MiB, uploadConcurrency },
            ]);
          }
        }
        settings.push(['put 16 MiB parts × 4, sendChecksums false', { sendChecksums: false }]);
        const results = await rounds(
          SWEEP_ROUNDS,
          settings.map(([name, extra]) => {
            const conn = connect(extra);
            return [name, () => oursUpload(ctx, conn, 'sweep')] as [string, () => Promise<Sample>];
          }),
        );
        say('');
        say(
          markdownTable(
            HEADER,
            results.map((r, i) => row(bytes, r, i === 0 ? null : results[0]!)),
          ),
        );
      }
      if (ONLY.has('download')) {
        const key = 'download.safetensors';
        const settings: Array<[string, S3StoreOptions]> = [];
        for (const rangeMiB of [8, 16, 32, 64]) {
          for (const downloadConcurrency of [1, 2, 4, 8]) {
            settings.push([
              `stream ${rangeMiB} MiB ranges × ${downloadConcurrency}`,
              { rangeSize: rangeMiB * MiB, downloadConcurrency },
            ]);
          }
        }
        const results = await rounds(
          SWEEP_ROUNDS,
          settings.map(([name, extra]) => {
            const store = new S3Store(`s3://${server.bucket}/bench`, connect(extra));
            return [name, () => oursDownload(ctx, store, key, false)] as [string, () => Promise<Sample>];
          }),
        );
        say('');
        say(
          markdownTable(
            HEADER,
            results.map((r, i) => row(bytes, r, i === 0 ? null : results[0]!)),
          ),
        );
      }
    }
    say('');
    say(
      `load average at the end: ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}`,
    );
  } finally {
    for (const conn of connections) conn.destroy();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
