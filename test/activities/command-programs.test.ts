/**
 * Command programs as a worker sees them: registered by name (`ckpt worker --program NAME=exec:CMD`, the
 * plugin's `programs`), carried ad hoc in a pipeline's input (run only from an allowed program root), and
 * the command line split without a shell.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ApplicationFailure } from '@temporalio/common';
import { configureAllowedRoots } from '../../activities';
import {
  childKillGrace,
  commandForChild,
  registerPrograms,
  workerProgramNames,
} from '../../activities/programs';
import { workerPrograms } from '../../cli/pipeline-commands';
import { checkCommandProgram, commandProgram, splitCommand } from '../../program/command';
import { CANCEL_GRACE_MS } from '../../activities/child';

after(() => configureAllowedRoots(undefined));

describe('command programs on a worker', () => {
  it('splits a command line like a shell, without one', () => {
    assert.deepEqual(splitCommand(`python3 -u "my dir/train.py" --name 'a b' x\\ y`), [
      'python3',
      '-u',
      'my dir/train.py',
      '--name',
      'a b',
      'x y',
    ]);
    assert.deepEqual(splitCommand(`echo "a \\"q\\" b" '$HOME' *`), ['echo', 'a "q" b', '$HOME', '*']);
    assert.throws(() => splitCommand(`python3 'open`), /unterminated ' quote/);
    assert.throws(() => splitCommand('   '), /the command is empty/);
  });

  it('names a command by its script unless told, and resolves its directory', () => {
    const p = commandProgram('python3 examples/python-mlp/train.py --fast', { cwd: '/srv/x' });
    assert.equal(p.name, 'train');
    assert.equal(p.cwd, '/srv/x');
    assert.deepEqual(p.argv, ['python3', 'examples/python-mlp/train.py', '--fast']);
    assert.equal(commandProgram('./run', { name: 'mlp' }).name, 'mlp');
    assert.throws(() => commandProgram('python3 t.py', { name: '../evil' }), /not a short identifier/);
    assert.throws(() => checkCommandProgram({ name: 'a', argv: [], cwd: '/' }), /argv/);
    assert.throws(() => checkCommandProgram({ name: 'a', argv: ['x'], cwd: 'rel' }), /cwd/);
  });

  it('ckpt worker --program NAME=exec:CMD and NAME=eval-exec:CMD register one command program', async () => {
    const programs = await workerPrograms([
      'mlp=exec:python3 train.py',
      'mlp=eval-exec:python3 eval.py --quick',
    ]);
    assert.deepEqual(programs, {
      mlp: { exec: 'python3 train.py', evalExec: 'python3 eval.py --quick' },
    });
    await assert.rejects(workerPrograms(['mlp=eval-exec:python3 eval.py']), /needs mlp=exec:CMD too/);
    await assert.rejects(workerPrograms(['=exec:x']), /--program must be NAME=PATH, NAME=exec:CMD/);
  });

  it('a registered command runs by its name, with its own directory, grace and metric', () => {
    registerPrograms({
      pymlp: {
        exec: 'python3 train.py',
        evalExec: 'python3 eval.py',
        cwd: '/srv/pymlp',
        metric: { name: 'accuracy', mode: 'max' },
        killGraceMs: 4000,
      },
    });
    assert.ok(workerProgramNames().includes('pymlp'));
    const command = commandForChild('pymlp')!;
    assert.deepEqual(command, {
      name: 'pymlp',
      argv: ['python3', 'train.py'],
      cwd: '/srv/pymlp',
      evalArgv: ['python3', 'eval.py'],
      killGraceMs: 4000,
      metric: { name: 'accuracy', mode: 'max' },
    });
    // The training child gets the command's grace to stop it, and a margin of its own.
    assert.equal(childKillGrace(command), 4000 + CANCEL_GRACE_MS);
    assert.equal(childKillGrace('gpt'), CANCEL_GRACE_MS);
    assert.equal(commandForChild('gpt'), undefined, 'a TypeScript program is no command');
  });

  it('an ad hoc command from a pipeline input runs only from an allowed program root', () => {
    const adHoc = commandProgram('python3 train.py', { cwd: '/srv/team/mlp', name: 'mlp' });
    configureAllowedRoots({ programs: [] });
    const err = (() => {
      try {
        commandForChild('mlp', adHoc);
      } catch (e) {
        return e;
      }
      return assert.fail('an ad hoc command outside the program roots was accepted');
    })();
    assert.ok(err instanceof ApplicationFailure);
    assert.equal(err.nonRetryable, true);
    assert.match(err.message, /\/srv\/team\/mlp/);
    configureAllowedRoots({ programs: [join('/srv', 'team')] });
    assert.deepEqual(commandForChild('mlp', adHoc), adHoc);
  });
});
