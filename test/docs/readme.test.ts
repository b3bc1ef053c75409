/**
 * The README's commands run as written.
 *
 * - The blocks marked `<!-- readme-test: NAME -->` (the CLI and pipeline examples) run line by line in bash,
 *   in a fresh directory, with `ckpt` resolving to this checkout's bin/ckpt.js and a real Temporal dev server
 *   at TEMPORAL_ADDRESS (the one thing the pipeline block asks the reader to start elsewhere). Every line must
 *   exit 0, a `# → X` comment must be what the line prints, and the files and states the comments promise
 *   are checked. The block's own `ckpt worker ... &` is the worker the pipelines run on, and its own
 *   `kill %1` must leave nothing running.
 * - Every command of `ckpt --help` has a synopsis in the README, and every synopsis command is used in an
 *   example, so a new command cannot be left out.
 * - The Quickstart: `npm run demo` runs as written (its own dev server, checkpoints in a temp directory);
 *   `npm ci` and `npm test` cannot run inside the test suite, and the CI script runs them.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT } from '../helpers/cli';
import { baseEnv, temporalEnv, type TemporalTestEnv } from '../helpers/temporal';
import { tempDir } from '../helpers/tmp';
import {
  commandLines,
  commentLines,
  fencedBlocks,
  namesUsed,
  synopsisNames,
  type CommandLine,
  type FencedBlock,
} from './markdown';

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const BLOCKS = fencedBlocks(README);
/** Sections whose unmarked blocks are the CLI synopsis. */
const SYNOPSIS_SECTIONS = ['CLI', 'Pipelines (Temporal)'];
/** Commands that run in the foreground for good: an example names them in a comment instead. */
const NAMED_IN_A_COMMENT = ['dev-server', 'codec-server'];

function marked(name: string): FencedBlock {
  const block = BLOCKS.find((b) => b.marker === name);
  assert.ok(block, `README.md has no block marked <!-- readme-test: ${name} -->`);
  return block;
}

// ---- running shell code in its own process group ----------------------------------------------------------

interface ShellResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** Processes of the group still alive after the shell had ended and `graceMs` had passed (then killed). */
  leftover: string[];
}

const groups = new Set<number>();
process.once('exit', () => {
  for (const pgid of groups) killGroup(pgid);
});

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Live (not zombie) processes of a process group, as `pid args`. */
function groupMembers(pgid: number): string[] {
  const ps = spawnSync('ps', ['-eo', 'pgid=,stat=,pid=,args='], { encoding: 'utf8' });
  return ps.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(([g, stat]) => Number(g) === pgid && !stat!.startsWith('Z'))
    .map(([, , pid, ...args]) => `${pid} ${args.join(' ')}`);
}

/**
 * `bash ARGS` as the leader of a new process group; after the shell ends, waits up to `graceMs` for the
 * rest of the group (background jobs, servers) to end, then kills what is left and reports it.
 */
function runShell(
  args: string[],
  {
    cwd,
    env,
    timeoutMs,
    graceMs = 30_000,
  }: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number; graceMs?: number },
): Promise<ShellResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('bash', args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const pgid = child.pid!;
    groups.add(pgid);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => killGroup(pgid), timeoutMs);
    child.on('error', reject);
    child.on('close', async (code, signal) => {
      clearTimeout(timer);
      const ms = Date.now() - started;
      const deadline = Date.now() + graceMs;
      let leftover = groupMembers(pgid);
      while (leftover.length > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        leftover = groupMembers(pgid);
      }
      if (leftover.length > 0) killGroup(pgid);
      groups.delete(pgid);
      if (signal === 'SIGKILL') stderr += `\n[killed after ${timeoutMs} ms]`;
      resolve({ code, signal, stdout, stderr, ms, leftover });
    });
  });
}

// ---- running a marked block line by line -------------------------------------------------------------------

interface LineResult {
  line: CommandLine;
  /** null: the line did not run (an earlier line failed). */
  code: number | null;
  ms: number;
  stdout: string;
  stderr: string;
}

interface BlockRun {
  dir: string;
  shell: ShellResult;
  lines: LineResult[];
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Everything the test writes (removed at the end; created here, at the top level, not in a hook). */
const WORK = tempDir('ckpt-readme-');
const workDir = (name: string) => {
  const dir = join(WORK, name);
  mkdirSync(dir);
  return dir;
};

/** A `ckpt` on PATH that is this checkout's bin/ckpt.js. */
const SHIM_DIR = (() => {
  const dir = workDir('bin');
  const shim = join(dir, 'ckpt');
  writeFileSync(
    shim,
    `#!/bin/sh\nexec ${quote(process.execPath)} ${quote(join(ROOT, 'bin', 'ckpt.js'))} "$@"\n`,
  );
  chmodSync(shim, 0o755);
  return dir;
})();

/**
 * Every command line of the block, as written, in one bash process (so that background jobs and `%1`
 * work), each line's stdout, stderr, exit status and time captured; stops at the first line that fails.
 */
async function runBlock(block: FencedBlock, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<BlockRun> {
  const dir = workDir(`${block.marker}-cwd`);
  const results = workDir(`${block.marker}-results`);
  const lines = commandLines(block);
  const script = lines.flatMap((line, i) => {
    const f = quote(join(results, String(i)));
    return [
      '__t=$(date +%s%N)',
      `{ ${line.text}\n} >${f}.out 2>${f}.err`,
      `__rc=$?; echo "$__rc $(( ($(date +%s%N) - __t) / 1000000 ))" >${f}.rc`,
      '[ "$__rc" -eq 0 ] || exit "$__rc"',
    ];
  });
  const scriptFile = join(results, 'block.sh');
  writeFileSync(scriptFile, script.join('\n') + '\n');
  const shell = await runShell([scriptFile], {
    cwd: dir,
    env: { ...env, PATH: `${SHIM_DIR}:${env.PATH ?? ''}` },
    timeoutMs,
  });
  const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');
  return {
    dir,
    shell,
    lines: lines.map((line, i) => {
      const [code, ms] = read(join(results, `${i}.rc`))
        .trim()
        .split(' ');
      return {
        line,
        code: code === undefined || code === '' ? null : Number(code),
        ms: Number(ms ?? 0),
        stdout: read(join(results, `${i}.out`)),
        stderr: read(join(results, `${i}.err`)),
      };
    }),
  };
}

const where = (r: LineResult) => `README.md:${r.line.lineNo}: ${r.line.command}`;

/** Every line ran and exited 0; `# → X` comments hold; the block left no process behind. */
function assertBlockPassed(run: BlockRun, diagnostic: (message: string) => void): void {
  const timing = run.lines.map((r) => `${String(r.ms).padStart(6)} ms  ${where(r)}`).join('\n');
  for (const r of run.lines) {
    assert.notEqual(
      r.code,
      null,
      `${where(r)}: did not run (shell: ${run.shell.code ?? run.shell.signal}${run.shell.stderr})\n${timing}`,
    );
    assert.equal(
      r.code,
      0,
      `${where(r)}: exit ${r.code}\nstdout:\n${r.stdout.slice(-2000)}\nstderr:\n${r.stderr.slice(-4000)}`,
    );
    if (r.line.expect !== undefined) assert.equal(r.stdout.trim(), r.line.expect, `${where(r)}: stdout`);
  }
  assert.equal(run.shell.code, 0, run.shell.stderr);
  assert.deepEqual(run.shell.leftover, [], 'processes the block started were still running after it ended');
  diagnostic(`block ran in ${(run.shell.ms / 1000).toFixed(1)} s`);
  for (const line of timing.split('\n')) diagnostic(line);
}

/** The one line whose command matches. */
function lineOf(run: BlockRun, pattern: RegExp): LineResult {
  const found = run.lines.filter((r) => pattern.test(r.line.command));
  assert.equal(
    found.length,
    1,
    `one README line matching ${pattern}, found ${found.map(where).join('; ') || 'none'}`,
  );
  return found[0]!;
}

const committedSteps = (dir: string) =>
  readdirSync(dir)
    .map((f) => /^manifest_(\d+)\.json$/.exec(f)?.[1])
    .filter((s): s is string => s !== undefined)
    .map(Number)
    .sort((a, b) => a - b);

// ---- the tests -----------------------------------------------------------------------------------------------

const T = temporalEnv('readme');
let env: TemporalTestEnv;
let demo: { command: string; run: Promise<ShellResult>; root: string } | undefined;
/** The example blocks run side by side (and beside the demo); each test awaits its own. */
const runs = new Map<string, Promise<BlockRun>>();

/** A promise that is awaited later: no unhandled-rejection warning in the meantime. */
function later<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/** The Quickstart's commands: each line split at `&&` and `;`, comments dropped. */
const quickstart = (() => {
  const block = BLOCKS.find((b) => b.section === 'Quickstart');
  assert.ok(block, 'README.md has a code block under ## Quickstart');
  return commandLines(block).flatMap((l) =>
    l.command
      .split(/&&|;/)
      .map((c) => ({ command: c.trim(), lineNo: l.lineNo }))
      .filter((c) => c.command !== ''),
  );
})();

before(async () => {
  // The demo takes a minute: it runs beside the other tests.
  const line = quickstart.find((c) => c.command === 'npm run demo');
  if (line) {
    const root = workDir('demo');
    demo = {
      command: line.command,
      root,
      run: later(
        runShell(['-c', line.command], {
          cwd: ROOT,
          env: { ...baseEnv(), DEMO_ROOT: root },
          timeoutMs: 300_000,
          graceMs: 15_000,
        }),
      ),
    };
  }
  runs.set('cli', later(runBlock(marked('cli'), baseEnv(), 240_000)));
  env = await T.start();
  // The block sets the worker's allowed roots itself, as a reader must.
  const { CKPT_ALLOWED_ROOTS: _roots, ...readerEnv } = env.env;
  runs.set('pipelines', later(runBlock(marked('pipelines'), readerEnv, 280_000)));
});

after(async () => {
  // Never leave a block or the demo (and its server) running, whatever failed.
  await Promise.allSettled([...runs.values(), demo?.run]);
});

describe('README: every command is documented and shown', () => {
  it('ckpt --help lists exactly the synopsis commands, and every one is used in an example', () => {
    const help = spawnSync(process.execPath, [join(ROOT, 'bin', 'ckpt.js'), '--help'], {
      encoding: 'utf8',
      env: baseEnv(),
    });
    assert.equal(help.status, 0, help.stderr);
    const commandsPart = help.stdout.split('Commands:\n')[1]?.split('\n\n')[0] ?? '';
    const commands = commandsPart
      .split('\n')
      .map((l) => /^ {2}([a-z-]+(?: [a-z-]+)*) {2,}/.exec(l)?.[1])
      .filter((n): n is string => n !== undefined);
    assert.ok(commands.length >= 20, `commands parsed from ckpt --help: ${commands.join(', ')}`);

    const synopsis = BLOCKS.filter(
      (b) => SYNOPSIS_SECTIONS.includes(b.section) && b.marker === undefined,
    ).flatMap((b) => b.lines.flatMap(synopsisNames));
    assert.deepEqual(
      [...new Set(synopsis)].sort(),
      [...commands].sort(),
      'README synopsis commands vs ckpt --help',
    );

    const examples = BLOCKS.filter((b) => b.marker !== undefined);
    const used = new Set(
      examples.flatMap((b) => commandLines(b).flatMap((l) => namesUsed(l.command, commands))),
    );
    const comments = examples.flatMap(commentLines).join('\n');
    for (const name of synopsis) {
      if (NAMED_IN_A_COMMENT.includes(name)) {
        assert.ok(comments.includes(`ckpt ${name}`), `an example block's comment names ckpt ${name}`);
        assert.ok(
          !used.has(name),
          `ckpt ${name} runs in the foreground: name it in a comment, not on a command line`,
        );
      } else assert.ok(used.has(name), `ckpt ${name} is in the README synopsis but in no example block`);
    }
  });
});

describe('README: the CLI example', () => {
  it('runs as written, line by line, and leaves what its comments say', { timeout: 300_000 }, async (t) => {
    const run = await runs.get('cli')!;
    assertBlockPassed(run, (m) => t.diagnostic(m));
    const d1 = join(run.dir, 'runs', 'base_checkpoints', 'd1');
    // train to 20 + resume to 30, then prune deleted step 10; copy took the rest.
    assert.deepEqual(committedSteps(d1), [20, 30]);
    assert.deepEqual(committedSteps(join(run.dir, 'backup', 'd1')), [20, 30]);
    assert.deepEqual(committedSteps(join(run.dir, 'runs', 'base_checkpoints', 'imported')), [30]);
    for (const r of [lineOf(run, /^ckpt eval \S+ --step 10$/), lineOf(run, /^ckpt eval \S+$/)]) {
      assert.ok(Number(r.stdout.trim()) > 0, `${where(r)}: val_bpb, got ${r.stdout}`);
    }
    assert.ok(existsSync(join(d1, 'eval_000030.json')));
    const verified = lineOf(run, /^ckpt verify \S+\/d1$/).stdout;
    for (const step of [10, 20, 30]) assert.match(verified, new RegExp(`^ok +step ${step} `, 'm'));
    assert.match(lineOf(run, /^ckpt sample /).stdout, /^The worker/);
    assert.match(lineOf(run, /^ckpt prune .*--dry-run/).stdout, /^10 +would delete/m);
    const report = lineOf(run, /^ckpt report /);
    assert.equal(report.stdout.trim(), join(run.dir, 'report.html'));
    assert.match(readFileSync(join(run.dir, 'report.html'), 'utf8').slice(0, 200), /<!doctype html>/i);
  });
});

describe('README: the pipeline example', () => {
  it(
    'runs as written against a dev server, on the worker its own line starts',
    { timeout: 330_000 },
    async (t) => {
      const block = marked('pipelines');
      const background = commandLines(block).filter((l) => /&$/.test(l.command));
      assert.deepEqual(
        background.map((l) => l.command),
        ['ckpt worker 2> worker.log &'],
        'the only background line is the worker (its log in worker.log)',
      );
      const run = await runs.get('pipelines')!;
      const workerLog = () => readFileSync(join(run.dir, 'worker.log'), 'utf8');
      try {
        assertBlockPassed(run, (m) => t.diagnostic(m));
      } catch (err) {
        if (existsSync(join(run.dir, 'worker.log')))
          (err as Error).message += `\nworker.log:\n${workerLog().slice(-4000)}`;
        throw err;
      }
      // The README's worker served the pipelines: it connected to the test's server.
      assert.ok(workerLog().includes(env.address), `worker.log names the server ${env.address}`);

      const started = lineOf(run, /^ckpt pipeline start .*--wait/);
      assert.equal(started.stdout.trim().split('\n')[0], 'pipe');
      const status = lineOf(run, /^ckpt pipeline status pipe$/).stdout;
      assert.match(status, /^state +completed$/m);
      assert.match(status, /^step +20 \/ 20\b/m);
      assert.deepEqual(committedSteps(join(run.dir, 'runs', 'base_checkpoints', 'pipe')), [15, 20]);
      assert.ok(existsSync(join(run.dir, 'pipe.html')));

      const listed = lineOf(run, /^ckpt schedule list$/).stdout;
      assert.match(listed, /^eval-pipe +evaluateNewCheckpoints /m);
      assert.match(listed, /^retain-pipe +applyRetention /m);
      const left: string[] = [];
      for await (const s of env.client.schedule.list()) left.push(s.scheduleId);
      assert.deepEqual(left, [], 'the block deletes the schedules it creates');
      // After the stop signal: stopped, or still cancelling its segment on a slow machine.
      assert.match(lineOf(run, /^ckpt pipeline status long$/).stdout, /^state +(stopping|stopped)$/m);
    },
  );
});

describe('README: the Quickstart', () => {
  it('npm run demo runs as written; npm ci and npm test run in CI', { timeout: 340_000 }, async () => {
    const ci = readFileSync(join(ROOT, '.ci', 'run'), 'utf8');
    const ciPosition = (command: string) =>
      ci.search(new RegExp(`^\\s*${command.replace(/ /g, '\\s+')}\\b`, 'm'));
    const covered = ['npm ci', 'npm test'];
    for (const { command, lineNo } of quickstart) {
      if (command === 'npm run demo') continue;
      assert.ok(
        covered.includes(command),
        `README.md:${lineNo}: "${command}" in the Quickstart: this test does not know how to run it`,
      );
      assert.ok(ciPosition(command) >= 0, `.ci/run runs ${command}`);
    }
    assert.ok(ciPosition('npm ci') < ciPosition('npm test'), '.ci/run installs before it tests');

    assert.ok(demo, 'the Quickstart runs npm run demo');
    const res = await demo.run;
    const output = `stdout:\n${res.stdout.slice(-3000)}\nstderr:\n${res.stderr.slice(-3000)}`;
    assert.equal(res.code, 0, output);
    assert.deepEqual(res.leftover, [], `the demo left processes running\n${output}`);
    assert.match(res.stdout, /^== starting a Temporal dev server/m, 'the demo started its own server');
    assert.match(res.stdout, /^ {3}last step: 60$/m, output);
    assert.match(res.stdout, /^== done in \d+ s/m, output);
    // What the demo says retention kept is what is on disk, ending at the last step.
    const kept = /^== retention deleted .*; kept ([\d, ]+)$/m.exec(res.stdout)?.[1];
    assert.ok(kept, output);
    const onDisk = committedSteps(join(demo.root, 'base_checkpoints', 'd2'));
    assert.deepEqual(onDisk, kept.split(', ').map(Number));
    assert.equal(onDisk.at(-1), 60);
  });
});
