/**
 * Child process of bench/io.ts: one Node I/O contender, timed in a fresh process so that every contender
 * (Node and Python alike) starts from the same state: build the tensors from the source file, drop the
 * page cache (when allowed), pause, then time the operation. Prints one JSON line.
 *
 * Usage: node --import tsx bench/lib/io-child.ts <mode> <source> <target> <drop 0|1> <settle ms>
 *   raw-write   write <target> with node fs in the writer's chunks, then fsync
 *   ours-save   saveCheckpoint(<target>, 1, model tensors only)
 *   raw-read    fs.readFile(<target>), cold then warm
 *   ours-load-on / ours-load-off   loadCheckpoint(<target>, 1, { verify }), cold then warm
 * Reads are checked against the source (untimed).
 */
import { promises as fs } from 'node:fs';
import { loadCheckpoint, saveCheckpoint } from '../../checkpoint';
import { decodeSafetensors, safetensorsChunks } from '../../checkpoint/safetensors-format';
import type { NamedTensors } from '../../checkpoint/tensors';
import { dropCaches, fullGc, syncAll } from './system';

async function readSource(path: string): Promise<NamedTensors> {
  // Per tensor, straight from the file (as the Python side does): no big temporary freed before timing.
  const handle = await fs.open(path, 'r');
  try {
    const prefix = Buffer.alloc(8);
    await handle.read(prefix, 0, 8, 0);
    const n = Number(prefix.readBigUInt64LE(0));
    const headerBytes = Buffer.alloc(n);
    await handle.read(headerBytes, 0, n, 8);
    const header = JSON.parse(headerBytes.toString('utf8')) as Record<
      string,
      { dtype: 'F32'; shape: number[]; data_offsets: [number, number] }
    >;
    const out: NamedTensors = {};
    for (const [name, info] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const [begin, end] = info.data_offsets;
      const data = new Float32Array((end - begin) / 4);
      await handle.read(new Uint8Array(data.buffer), 0, end - begin, 8 + n + begin);
      out[name] = { dtype: info.dtype, shape: info.shape, data };
    }
    return out;
  } finally {
    await handle.close();
  }
}

function same(a: NamedTensors, b: NamedTensors): boolean {
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  return names.every((k) => {
    const x = a[k]!.data;
    const y = b[k]?.data;
    if (!y) return false;
    return Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(
      Buffer.from(y.buffer, y.byteOffset, y.byteLength),
    );
  });
}

async function main(): Promise<void> {
  const [mode, source, target, dropArg, settleArg] = process.argv.slice(2) as string[];
  const drop = dropArg === '1';
  const settleMs = Number(settleArg ?? 1000);
  const coldStart = async () => {
    if (drop && dropCaches()) await new Promise((r) => setTimeout(r, settleMs));
    else syncAll();
  };
  const timed = async <T>(fn: () => Promise<T>) => {
    const t0 = performance.now();
    const value = await fn();
    return { s: (performance.now() - t0) / 1000, value };
  };
  const result: Record<string, unknown> = { mode };

  if (mode === 'raw-write' || mode === 'ours-save') {
    const tensors = await readSource(source!);
    fullGc();
    await coldStart();
    if (mode === 'raw-write') {
      const { s } = await timed(async () => {
        const handle = await fs.open(target!, 'wx');
        try {
          for (const chunk of safetensorsChunks(tensors).chunks) {
            let written = 0;
            while (written < chunk.byteLength) {
              const { bytesWritten } = await handle.write(chunk, written, chunk.byteLength - written);
              written += bytesWritten;
            }
          }
          await handle.sync();
        } finally {
          await handle.close();
        }
      });
      result.s = s;
    } else {
      result.s = (await timed(() => saveCheckpoint(target!, 1, { model: tensors, meta: { bench: 'io' } }))).s;
    }
  } else {
    // Only the read is timed; for the raw file, decoding it into tensors (for the check) is not.
    const once = async (): Promise<{ s: number; tensors: () => NamedTensors }> => {
      if (mode === 'raw-read') {
        const { s, value } = await timed(() => fs.readFile(target!));
        return { s, tensors: () => decodeSafetensors(value).tensors };
      }
      const verify = mode === 'ours-load-on';
      const { s, value } = await timed(() => loadCheckpoint(target!, 1, { verify, loadOptimizer: false }));
      return { s, tensors: () => value.model! };
    };
    await coldStart();
    let cold: Awaited<ReturnType<typeof once>> | null = await once();
    result.cold_s = cold.s;
    result.equal = same(await readSource(source!), cold.tensors());
    cold = null; // let the warm run start from the same free memory
    fullGc();
    result.warm_s = (await once()).s;
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
