/**
 * Two parts of the CLI contract every command shares: a tag or a source is exactly one path segment
 * (refused with exit 2, one error line naming the flag, nothing written), and a command group
 * (`ckpt pipeline`, `ckpt schedule`, `ckpt schedule eval`) lists its subcommands on --help.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pipelineCommands } from '../../cli/pipeline-commands';
import { scheduleCommands } from '../../cli/schedule-commands';
import { ckptAsync, type CliResult } from '../helpers/cli';

const work = mkdtempSync(join(tmpdir(), 'ckpt-names-'));
after(() => rmSync(work, { recursive: true, force: true }));

// No server listens here: a command that got past its name checks would fail to connect (exit 1).
const ENV = { TEMPORAL_ADDRESS: '127.0.0.1:1', CKPT_LOG_FORMAT: 'json' };
const run = (args: string[]) => ckptAsync(args, ENV);
const show = (r: CliResult) => `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;

function expectUsageError(r: CliResult, flag: RegExp): void {
  assert.equal(r.code, 2, show(r));
  assert.equal(r.stdout, '', show(r));
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
  assert.equal(lines.length, 1, show(r));
  assert.match(lines[0]!, /^ckpt: error: /, show(r));
  assert.match(lines[0]!, flag, show(r));
}

describe('--tag and --source are one path segment', () => {
  const BAD_TAGS = ['../evil', '.', 'a/b', ''];
  const BAD_SOURCES = ['..', 'a\\b'];

  it('ckpt train refuses each bad --tag and --source and writes nothing, not even outside the root', async () => {
    const root = join(work, 'train-root');
    const runs = await Promise.all([
      ...BAD_TAGS.map((bad) => run(['train', '--root', root, '--tag', bad, '--depth', '1', '--steps', '1'])),
      ...BAD_SOURCES.map((bad) =>
        run(['train', '--root', root, '--source', bad, '--tag', 'ok', '--depth', '1', '--steps', '1']),
      ),
    ]);
    runs.forEach((r, i) => expectUsageError(r, i < BAD_TAGS.length ? /--tag\b/ : /--source\b/));
    // ROOT/base_checkpoints/../evil would have been ROOT/evil, outside the source directory; the checks
    // come before the first write.
    assert.equal(existsSync(root), false);
    assert.deepEqual(readdirSync(work), []);
  });

  it('ckpt train --nproc 2 refuses a bad --tag before it starts any rank', async () => {
    const ranks = await run([
      'train',
      '--root',
      join(work, 'nproc'),
      '--tag',
      '../evil',
      '--depth',
      '1',
      '--steps',
      '1',
      '--nproc',
      '2',
    ]);
    expectUsageError(ranks, /--tag "\.\.\/evil"/);
    assert.doesNotMatch(ranks.stderr, /rank \d failed/);
  });

  it('ckpt train --dir and ckpt schedule eval|retention create --dir refuse a directory whose tag is not a name', async () => {
    const runs = await Promise.all([
      run(['train', '--dir', 's3://bucket/base_checkpoints/..', '--steps', '1']),
      run(['train', '--dir', join(work, 'x') + '/.', '--steps', '1']),
      run(['schedule', 'eval', 'create', '--dir', 's3://bucket/base_checkpoints/..', '--every', '1h']),
      run([
        'schedule',
        'retention',
        'create',
        '--dir',
        's3://bucket/base_checkpoints/.',
        '--every',
        '1h',
        '--keep-last',
        '2',
      ]),
    ]);
    for (const r of runs) expectUsageError(r, /the tag of --dir/);
  });

  it('ckpt pipeline start and ckpt list refuse them too, before connecting to anything', async () => {
    const root = join(work, 'pipeline-root');
    const runs = await Promise.all([
      ...BAD_TAGS.map((bad) =>
        run(['pipeline', 'start', '--root', root, '--tag', bad, '--depth', '1', '--steps', '2']),
      ),
      ...BAD_SOURCES.map((bad) =>
        run(['pipeline', 'start', '--root', root, '--source', bad, '--tag', 'ok', '--steps', '2']),
      ),
      run(['list', root, '--source', '..']),
    ]);
    runs.forEach((r, i) => expectUsageError(r, i < BAD_TAGS.length ? /--tag\b/ : /--source\b/));
    assert.equal(existsSync(root), false);
  });

  it('a good tag gets past the check (the pipeline start then fails to connect: exit 1)', async () => {
    const r = await run([
      'pipeline',
      'start',
      '--root',
      join(work, 'good'),
      '--tag',
      'my-run_1.2',
      '--depth',
      '1',
      '--steps',
      '2',
    ]);
    assert.equal(r.code, 1, show(r));
    assert.doesNotMatch(r.stderr, /--tag/);
  });
});

describe('a command group lists its subcommands', () => {
  const groups: Array<{ args: string[]; prefix: string; names: string[] }> = [
    {
      args: ['pipeline', '--help'],
      prefix: 'pipeline ',
      names: pipelineCommands.filter((c) => c.name.startsWith('pipeline ')).map((c) => c.name),
    },
    { args: ['schedule', '--help'], prefix: 'schedule ', names: scheduleCommands.map((c) => c.name) },
    { args: ['schedule', 'eval', '-h'], prefix: 'schedule eval ', names: ['schedule eval create'] },
  ];

  for (const { args, prefix, names } of groups) {
    it(`ckpt ${args.join(' ')} prints every subcommand with its one-line summary and exits 0`, async () => {
      const r = await run(args);
      assert.equal(r.code, 0, show(r));
      assert.equal(r.stderr, '', show(r));
      assert.match(r.stdout, new RegExp(`^Usage: ckpt ${prefix}SUBCOMMAND`, 'm'));
      const all = [...pipelineCommands, ...scheduleCommands];
      for (const name of names) {
        const summary = all.find((c) => c.name === name)!.summary.split('\n')[0]!;
        const line = r.stdout.split('\n').find((l) => l.trim().startsWith(name.slice(prefix.length) + ' '));
        assert.ok(line, `${name} is not listed\n${r.stdout}`);
        assert.ok(line.endsWith(summary), `${name}: ${line}`);
      }
      assert.ok(names.length > 0);
    });
  }

  it('without --help, or with a word that is no subcommand, it is still bad usage (exit 2) naming the subcommands', async () => {
    const [bare, unknown] = await Promise.all([
      run(['schedule', 'eval']),
      run(['schedule', 'bogus', '--help']),
    ]);
    expectUsageError(bare, /"schedule eval" needs a subcommand: schedule eval create/);
    expectUsageError(unknown, /"schedule" needs a subcommand: .*schedule list/);
  });
});
