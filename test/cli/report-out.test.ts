/**
 * Found by the CLI fuzz campaign (npm run fault:fuzz): `ckpt report --out` into a directory that does not
 * exist ended in an untyped ENOENT ("run with --debug for the stack trace"). It must be a one-line typed
 * error naming the file, with exit code 2, and leave no temp file behind.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { saveCheckpoint } from '../../checkpoint';
import { ckpt } from '../helpers/cli';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

describe('ckpt report --out into a missing directory', () => {
  it('fails with one typed line naming the file, exit 2, nothing written', async () => {
    const work = tempDir();
    const dir = join(work, 'base_checkpoints', 'd2');
    await saveCheckpoint(dir, 10, { model: tinyModel(), optimizer: tinyOptimizer(), meta: tinyMeta() });
    const target = join(work, 'no-such-dir', 'r.html');
    const res = ckpt(['report', dir, '--out', target]);
    assert.equal(res.code, 2, res.stderr);
    const lines = res.stderr.trim().split('\n');
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0]!, /^ckpt: error: report: cannot write .*r\.html \(its directory does not exist\)/);
    assert.doesNotMatch(res.stderr, /--debug/);
    assert.equal(res.stdout, '');
    assert.ok(!existsSync(join(work, 'no-such-dir')));
    assert.deepEqual(readdirSync(work).sort(), ['base_checkpoints']);
  });
});
