import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadCheckpoint, optimFile, type NamedTensors } from '../../checkpoint';
import { planShards, reshardOptimizer } from '../../train/sharding';
import { ckpt, ckptAsync } from '../helpers/cli';
import { tempDir } from '../helpers/tmp';

// Global batch 6 divides by 1, 2 and 3.
const MODEL = ['--depth', '1', '--n-embd', '32', '--seq-len', '32', '--batch', '6', '--seed', '3'];
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
const bytesOf = (t: NamedTensors[string]) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

async function shards(dir: string, step: number, world: number): Promise<NamedTensors[]> {
  const out: NamedTensors[] = [];
  for (let r = 0; r < world; r++)
    out.push((await loadCheckpoint(dir, step, { rank: r, loadModel: false })).optimizer!);
  return out;
}

function union(parts: NamedTensors[]): Map<string, Buffer> {
  const all = new Map<string, Buffer>();
  for (const part of parts)
    for (const [k, t] of Object.entries(part)) if (k !== 'step') all.set(k, bytesOf(t));
  return all;
}

function lossAt(dir: string, step: number): number {
  const meta = JSON.parse(readFileSync(join(dir, `meta_${String(step).padStart(6, '0')}.json`), 'utf8'));
  return meta.loop_state.smoothed_loss as number;
}

describe('ckpt train --nproc 2', () => {
  it('writes one optimizer shard per rank that together hold the whole state, and resumes exactly', async () => {
    const root = tempDir();
    const [straight, part] = await Promise.all([
      ckptAsync([
        'train',
        '--root',
        root,
        '--tag',
        'straight',
        ...MODEL,
        '--steps',
        '8',
        '--save-every',
        '4',
        '--nproc',
        '2',
      ]),
      ckptAsync([
        'train',
        '--root',
        root,
        '--tag',
        'resumed',
        ...MODEL,
        '--steps',
        '4',
        '--save-every',
        '4',
        '--nproc',
        '2',
      ]),
    ]);
    assert.equal(straight.code, 0, straight.stderr);
    assert.equal(part.code, 0, part.stderr);
    const resumed = ckpt([
      'train',
      '--root',
      root,
      '--tag',
      'resumed',
      '--resume',
      '--steps',
      '8',
      '--save-every',
      '4',
      '--nproc',
      '2',
    ]);
    assert.equal(resumed.code, 0, resumed.stderr);
    const a = join(root, 'base_checkpoints', 'straight');
    const b = join(root, 'base_checkpoints', 'resumed');
    for (const f of ['model_000008.safetensors', optimFile(8, 0), optimFile(8, 1)])
      assert.equal(sha(join(a, f)), sha(join(b, f)), f);

    const [s0, s1] = await shards(a, 8, 2);
    const keys0 = Object.keys(s0!).filter((k) => k !== 'step');
    const keys1 = Object.keys(s1!).filter((k) => k !== 'step');
    assert.ok(keys0.length > 0 && keys1.length > 0, 'both ranks own state');
    assert.deepEqual(
      keys0.filter((k) => keys1.includes(k)),
      [],
      'no state is on both ranks',
    );
    const meta = (await loadCheckpoint(a, 8, { loadModel: false, loadOptimizer: false })).meta;
    const owners = (meta.sharding as { owners: Record<string, number> }).owners;
    const expected = Object.keys(owners)
      .flatMap((p) => [`${p}.exp_avg`, `${p}.exp_avg_sq`])
      .sort();
    assert.deepEqual([...keys0, ...keys1].sort(), expected, "together: exactly every parameter's moments");
    assert.notEqual(sha(join(a, optimFile(8, 0))), sha(join(a, optimFile(8, 1))));
  });
});

describe('resharding', () => {
  it('a W=2 checkpoint resumes with W=1 and W=3: the optimizer state is re-partitioned bit for bit and loss keeps falling', async () => {
    const root = tempDir();
    const base = ckpt([
      'train',
      '--root',
      root,
      '--tag',
      'w2',
      ...MODEL,
      '--steps',
      '6',
      '--save-every',
      '6',
      '--nproc',
      '2',
    ]);
    assert.equal(base.code, 0, base.stderr);
    const dir = join(root, 'base_checkpoints', 'w2');
    const saved = await shards(dir, 6, 2);
    const sizes = Object.entries((await loadCheckpoint(dir, 6, { loadOptimizer: false })).model!).map(
      ([name, t]) => [name, t.shape.reduce((a, b) => a * b, 1)] as [string, number],
    );
    for (const world of [1, 3]) {
      const plan = planShards(sizes, world);
      const parts = Array.from({ length: world }, (_, r) => reshardOptimizer(saved, plan, r));
      assert.deepEqual(union(parts), union(saved), `W=${world}: union of the re-partitioned state`);
    }

    const copies = await Promise.all(
      [1, 3].map(async (world) => {
        const tag = `from-w2-to-w${world}`;
        const target = join(root, 'base_checkpoints', tag);
        const copy = ckpt(['copy', dir, target]);
        assert.equal(copy.code, 0, copy.stderr);
        return { world, tag, target };
      }),
    );
    for (const { world, tag, target } of copies) {
      const refused = ckpt([
        'train',
        '--root',
        root,
        '--tag',
        tag,
        '--resume',
        '--steps',
        '12',
        '--nproc',
        String(world),
      ]);
      assert.equal(refused.code, 2, `W=${world} without --reshard must be refused`);
      assert.match(refused.stderr, /world size 2.*world size \d|world size \d.*world size 2/);
      const res = ckpt([
        'train',
        '--root',
        root,
        '--tag',
        tag,
        '--resume',
        '--reshard',
        '--steps',
        '12',
        '--save-every',
        '6',
        '--nproc',
        String(world),
      ]);
      assert.equal(res.code, 0, res.stderr);
      assert.ok(
        lossAt(target, 12) < lossAt(target, 6),
        `W=${world}: loss keeps falling (${lossAt(target, 6)} → ${lossAt(target, 12)})`,
      );
      const manifest = JSON.parse(readFileSync(join(target, 'manifest_000012.json'), 'utf8'));
      assert.equal(manifest.world_size, world);
    }
  });

  it('a global batch the world size does not divide is a clear error', () => {
    const root = tempDir();
    const res = ckpt(['train', '--root', root, ...MODEL, '--batch', '5', '--steps', '2', '--nproc', '2']);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /--batch 5 .* not divisible by world size 2/);
  });
});
