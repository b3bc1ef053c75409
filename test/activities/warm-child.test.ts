/**
 * The warm standby child of activities/child.ts: a command takes the waiting standby (same pid), trains
 * correctly, and a new standby replaces it; CKPT_WARM_CHILD=0 turns it off; a standby never outlives its
 * worker.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { prewarmChild, runCkpt, standbyPid } from '../../activities/child';
import { findLastStep } from '../../checkpoint';
import { ROOT } from '../helpers/cli';
import { pidAlive } from '../helpers/process';

const root = mkdtempSync(join(tmpdir(), 'ckpt-warm-'));
after(() => rmSync(root, { recursive: true, force: true }));
const TRAIN = [
  'train',
  '--root',
  root,
  '--depth',
  '1',
  '--n-embd',
  '32',
  '--seq-len',
  '32',
  '--batch',
  '4',
  '--save-every',
  '2',
  '--progress-json',
  '--resume',
];
describe('warm standby child', () => {
  it('a command runs in the waiting standby and a new standby follows', async () => {
    prewarmChild();
    const first = standbyPid();
    assert.ok(first, 'a standby is waiting');
    const res = await runCkpt([...TRAIN, '--tag', 'warm', '--steps', '4']);
    assert.equal(res.code, 0, res.stderrTail);
    assert.equal(await findLastStep(join(root, 'base_checkpoints', 'warm')), 4);
    const next = standbyPid();
    assert.ok(next && next !== first, 'a new standby replaced the one that was used');
    assert.ok(!pidAlive(first!), 'the used standby has exited with its command');
    // The same training from a cold child ends at the same weights.
    process.env.CKPT_WARM_CHILD = '0';
    try {
      const cold = await runCkpt([...TRAIN, '--tag', 'cold', '--steps', '4']);
      assert.equal(cold.code, 0, cold.stderrTail);
      assert.equal(standbyPid(), next, 'with CKPT_WARM_CHILD=0 the standby is left alone');
    } finally {
      delete process.env.CKPT_WARM_CHILD;
    }
    const file = (tag: string) =>
      readFileSync(join(root, 'base_checkpoints', tag, 'model_000004.safetensors'));
    assert.ok(file('warm').equals(file('cold')), 'warm and cold children train the same weights');
  });

  it('a standby exits when its worker dies', async () => {
    const parent = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '-e',
        "require('./activities/child.ts').prewarmChild(); console.log(require('./activities/child.ts').standbyPid()); setInterval(() => {}, 1000);",
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const pid = await new Promise<number>((resolve) =>
      parent.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
    );
    assert.ok(pid > 0 && pidAlive(pid));
    parent.kill('SIGKILL');
    const deadline = Date.now() + 20_000;
    while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.ok(!pidAlive(pid), 'the standby exited after its worker was killed');
  });
});
