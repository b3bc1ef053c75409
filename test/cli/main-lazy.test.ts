/**
 * The CLI loads command modules on demand (cli/main.ts COMMAND_MODULES): the table must name every
 * command's first word, and `ckpt train` (what every training segment runs) must not load the Temporal
 * client, the worker, or the report's charting library.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { COMMAND_MODULES } from '../../cli/main';
import { ROOT } from '../helpers/cli';

describe('lazy command table', () => {
  it('names the first word of every command its module defines, each word once', () => {
    const seen = new Map<string, number>();
    COMMAND_MODULES.forEach((m, i) => {
      for (const word of m.first) {
        assert.ok(!seen.has(word), `"${word}" is listed by modules ${seen.get(word)} and ${i}`);
        seen.set(word, i);
      }
      const commands = m.load();
      assert.ok(commands.length > 0);
      for (const c of commands) {
        const first = c.name.split(' ')[0]!;
        assert.ok(
          m.first.includes(first),
          `module ${i} defines "${c.name}" but lists only ${m.first.join(', ')}`,
        );
      }
      for (const word of m.first)
        assert.ok(
          commands.some((c) => c.name.split(' ')[0] === word),
          `module ${i} lists "${word}" but defines no such command`,
        );
    });
  });

  /** The heavy packages that `ckpt <argv>` loaded (run in a fresh process). */
  function heavyLoaded(argv: string[], heavy: string[]): string[] {
    const probe = `
      const { main } = require('./cli/main.ts');
      main(${JSON.stringify(argv)}).then((code) => {
        const loaded = Object.keys(require.cache);
        const heavy = ${JSON.stringify(heavy)}.filter((p) => loaded.some((f) => f.includes('node_modules/' + p)));
        process.stderr.write(JSON.stringify({ code, heavy }) + '\\n');
      });`;
    const res = spawnSync(process.execPath, ['--import', 'tsx', '-e', probe], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    const last = res.stderr.trim().split('\n').at(-1)!;
    const { code, heavy: found } = JSON.parse(last) as { code: number; heavy: string[] };
    assert.equal(code, 0, res.stderr);
    return found;
  }

  it('`ckpt train --help` loads neither the Temporal client nor the worker nor vega', () => {
    assert.deepEqual(
      heavyLoaded(['train', '--help'], ['@temporalio/client', '@temporalio/worker', 'vega/', 'prom-client']),
      [],
    );
  });

  it('`ckpt pipeline start --help` loads neither tfjs nor the Temporal worker', () => {
    assert.deepEqual(
      heavyLoaded(
        ['pipeline', 'start', '--help'],
        ['@tensorflow/', '@temporalio/worker', 'vega/', 'prom-client'],
      ),
      [],
    );
  });

  it("a warm standby's preload() loads what the train commands require only when they run", () => {
    const wanted = [
      '/train/trainer.ts',
      '/train/evaluate.ts',
      '/train/sample.ts',
      '/model/gpt.ts',
      '/model/build.ts',
      'node_modules/@tensorflow/tfjs-core/',
    ];
    const probe = `
      require('./cli/main.ts').preload();
      const loaded = Object.keys(require.cache);
      const missing = ${JSON.stringify(wanted)}.filter((p) => !loaded.some((f) => f.includes(p)));
      process.stderr.write(JSON.stringify({ missing }) + '\\n');
      process.exit(0);`;
    const res = spawnSync(process.execPath, ['--import', 'tsx', '-e', probe], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, CKPT_BACKEND: 'cpu' },
    });
    const last = res.stderr.trim().split('\n').at(-1)!;
    assert.deepEqual((JSON.parse(last) as { missing: string[] }).missing, [], res.stderr);
  });
});
