/**
 * A worker acts only on checkpoint locations under its allowed roots, and runs a program named by path
 * only from under its allowed program roots: the activities the workers register refuse anything else for
 * good (OutsideAllowedRootsError, non-retryable), naming the location and the roots, before any file is
 * touched. `..` and symlinks cannot get out of a root.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApplicationFailure } from '@temporalio/common';
import { configureAllowedRoots, controlActivities, trainActivities } from '../../activities';
import { programForChild } from '../../activities/programs';
import { checkWithinRoots, OutsideAllowedRootsError, saveCheckpoint } from '../../checkpoint';
import { loadAllowedRoots, NON_RETRYABLE_ERRORS } from '../../temporal.config';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

const work = tempDir('ckpt-roots-');
const root = join(work, 'allowed');
const outside = join(work, 'outside');
const programs = join(work, 'programs');

async function twoCheckpoints(dir: string): Promise<void> {
  for (const step of [1, 2]) {
    await saveCheckpoint(dir, step, {
      model: tinyModel(step),
      optimizer: tinyOptimizer(step),
      meta: tinyMeta(),
    });
  }
}

/** The failure `promise` rejects with: it must be the refusal, for good, naming `location`. */
async function refused(promise: Promise<unknown>, location: string): Promise<ApplicationFailure> {
  const err = await promise.then(
    () => assert.fail(`${location} was accepted`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ApplicationFailure, String(err));
  assert.equal(err.type, 'OutsideAllowedRootsError');
  assert.equal(err.nonRetryable, true);
  assert.ok(err.message.includes(location), err.message);
  return err;
}

before(() => {
  for (const d of [root, outside, programs]) mkdirSync(d, { recursive: true });
  configureAllowedRoots({ checkpoints: [root], programs: [programs] });
});
after(() => configureAllowedRoots(undefined));

describe('checkpoint locations outside the allowed roots', () => {
  it('a prune aimed outside is refused, naming the directory and the roots, and deletes nothing', async () => {
    const target = join(outside, 'run');
    await twoCheckpoints(target);
    const before = readdirSync(target).sort();
    const err = await refused(
      controlActivities.pruneCheckpoints({ dir: target, policy: { keepLast: 1 } }),
      target,
    );
    assert.ok(err.message.includes(root), 'names the allowed roots');
    assert.match(err.message, /CKPT_ALLOWED_ROOTS/);
    assert.deepEqual(readdirSync(target).sort(), before);

    // The same prune inside the root runs.
    const inside = join(root, 'run');
    await twoCheckpoints(inside);
    const pruned = await controlActivities.pruneCheckpoints({ dir: inside, policy: { keepLast: 1 } });
    assert.deepEqual(pruned.deleted, [1]);
  });

  it('a training segment aimed outside fails before anything is created there', async () => {
    const target = join(outside, 'never', 'created');
    await refused(trainActivities.trainSegment({ dir: target, toStep: 4, saveEvery: 2 }), target);
    assert.equal(existsSync(join(outside, 'never')), false);
  });

  it('every location field is checked: a copy from inside to outside, discovery outside', async () => {
    const dst = join(outside, 'copy');
    await refused(controlActivities.copyCheckpoints({ src: join(root, 'run'), dst }), dst);
    assert.equal(existsSync(dst), false);
    await refused(controlActivities.findLargestModel({ checkpointsDir: outside }), outside);
  });

  it('".." cannot climb out of a root', async () => {
    const sneaky = join(root, '..', 'outside', 'run');
    await refused(controlActivities.listCheckpoints({ dir: sneaky }), sneaky);
    await refused(controlActivities.listCheckpoints({ dir: `${root}/x/../../outside/run` }), 'outside/run');
  });

  it('a symlink inside a root that points outside is refused, also for a folder not yet created under it', async () => {
    const link = join(root, 'link-out');
    symlinkSync(outside, link);
    await refused(controlActivities.listCheckpoints({ dir: join(link, 'run') }), join(link, 'run'));
    await refused(controlActivities.findLastStep({ dir: join(link, 'new', 'tag') }), join(link, 'new'));
    // A link that stays inside is fine.
    const inner = join(root, 'link-in');
    symlinkSync(join(root, 'run'), inner);
    assert.deepEqual(
      (await controlActivities.listCheckpoints({ dir: inner })).map((c) => c.step),
      [2],
    );
  });

  it('a root is a whole folder: a sibling whose name starts with it is outside', () => {
    assert.throws(() => checkWithinRoots(`${root}-2/run`, [root]), OutsideAllowedRootsError);
    assert.equal(checkWithinRoots(join(root, 'a', 'b'), [root]), join(root, 'a', 'b'));
  });

  it('s3:// roots: same bucket and prefix only, no "." or ".." segments', () => {
    const roots = ['s3://bucket/runs'];
    assert.equal(checkWithinRoots('s3://bucket/runs/base/d4', roots), 's3://bucket/runs/base/d4');
    assert.equal(checkWithinRoots('s3://bucket/runs', roots), 's3://bucket/runs');
    for (const bad of [
      's3://bucket/runs2/x',
      's3://other/runs/x',
      's3://bucket/runs/../x',
      's3://bucket/x',
      '/runs',
    ]) {
      assert.throws(() => checkWithinRoots(bad, roots), OutsideAllowedRootsError, bad);
    }
    assert.throws(() => checkWithinRoots(join(root, 'x'), roots), OutsideAllowedRootsError, 'a local path');
  });

  it("is never retried: the class is among the pipelines' non-retryable error types", () => {
    assert.ok(NON_RETRYABLE_ERRORS.includes('OutsideAllowedRootsError'));
  });
});

describe('the roots come from the environment', () => {
  it('default: the configured store root (CKPT_ROOT, made absolute)', () => {
    assert.deepEqual(loadAllowedRoots({ CKPT_ROOT: 's3://b/p' }).checkpoints, ['s3://b/p']);
    assert.deepEqual(loadAllowedRoots({}).checkpoints, [join(process.cwd(), 'checkpoints')]);
    assert.deepEqual(loadAllowedRoots({}).programs, []);
  });

  it('CKPT_ALLOWED_ROOTS lists folders and s3:// prefixes; CKPT_ALLOWED_PROGRAM_ROOTS lists folders', () => {
    const roots = loadAllowedRoots({
      CKPT_ROOT: '/ignored',
      CKPT_ALLOWED_ROOTS: ` ${root} , s3://b/p,`,
      CKPT_ALLOWED_PROGRAM_ROOTS: programs,
    });
    assert.deepEqual(roots, { checkpoints: [root, 's3://b/p'], programs: [programs] });
    assert.throws(() => loadAllowedRoots({ CKPT_ALLOWED_PROGRAM_ROOTS: 's3://b/p' }), /not a local folder/);
  });
});

describe('programs named by path', () => {
  it('only under the allowed program roots; registered names and built-ins need no root', () => {
    const inside = join(programs, 'prog.js');
    const foreign = join(outside, 'prog.js');
    writeFileSync(inside, 'module.exports = {};');
    writeFileSync(foreign, 'module.exports = {};');
    assert.equal(programForChild(inside), inside);
    assert.equal(programForChild('gpt'), 'gpt');
    const err = (() => {
      try {
        programForChild(foreign);
      } catch (e) {
        return e;
      }
      assert.fail('a program outside the roots was accepted');
    })();
    assert.ok(err instanceof ApplicationFailure);
    assert.equal(err.type, 'OutsideAllowedRootsError');
    assert.equal(err.nonRetryable, true);
    assert.match(err.message, /ckpt worker --program NAME=PATH/);
    // A link in the program root to a module elsewhere is elsewhere.
    symlinkSync(foreign, join(programs, 'link.js'));
    assert.throws(() => programForChild(join(programs, 'link.js')), /outside the allowed roots/);
  });
});
