/**
 * All-reduce throughput of the TCP process group on this machine: W rank processes (default 2) reduce
 * buffers of several sizes; prints MB/s per size (payload bytes per second seen by one rank).
 * Usage: npm run bench:allreduce [-- W]
 */
import { spawn } from 'node:child_process';
import { freePort } from '../infra/temporal';
import { initProcessGroup, optionsFromEnv } from '../train/dist';

const SIZES_MB = [1, 8, 32, 128];
const ROUNDS = 5;

async function rank(): Promise<void> {
  const group = await initProcessGroup({ ...optionsFromEnv(), timeoutMs: 120_000 });
  const rows: string[] = [];
  for (const mb of SIZES_MB) {
    const data = new Float32Array((mb << 20) / 4).fill(group.rank + 1);
    await group.allReduce(data, 'sum'); // warm-up
    const times: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await group.barrier();
      const t0 = process.hrtime.bigint();
      await group.allReduce(data, 'sum');
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)]!;
    rows.push(
      `| ${mb} MiB | ${(times[0]! * 1000).toFixed(1)} | ${(median * 1000).toFixed(1)} | ${(times.at(-1)! * 1000).toFixed(1)} | ${(mb / median).toFixed(0)} |`,
    );
  }
  if (group.rank === 0) {
    process.stdout.write(`all-reduce (sum, float32), W=${group.worldSize}, ${ROUNDS} rounds each, median\n`);
    process.stdout.write(
      '| buffer | min ms | median ms | max ms | MiB/s (median) |\n|---|---|---|---|---|\n' +
        rows.join('\n') +
        '\n',
    );
  }
  await group.close();
}

async function main(): Promise<void> {
  if (process.env.RANK !== undefined) return rank();
  const world = Number(process.argv[2] ?? 2);
  const port = await freePort();
  const children = Array.from({ length: world }, (_, r) =>
    spawn(process.execPath, ['--import', 'tsx', __filename], {
      stdio: ['ignore', r === 0 ? 'inherit' : 'ignore', 'inherit'],
      env: {
        ...process.env,
        RANK: String(r),
        WORLD_SIZE: String(world),
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
      },
    }),
  );
  const codes = await Promise.all(
    children.map((c) => new Promise<number>((res) => c.on('close', (code) => res(code ?? 1)))),
  );
  process.exit(codes.some((c) => c !== 0) ? 1 : 0);
}

void main();
