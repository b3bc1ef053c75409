/**
 * `ckpt logits`, run as a real process: on the nanochat fixture (test/fixtures/nanochat, nanochat's own
 * logits) its --json output matches nanochat within 1e-4 on the cpu and wasm backends; the table form names
 * the argmax; bad token input is refused with exit 2 naming the flag.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { ROOT } from '../helpers/cli';
import { importNanochatFixture, nanochatReference } from '../helpers/nanochat-fixture';
import { tempDir } from '../helpers/tmp';

const ENV: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith('CKPT_') && !k.startsWith('NODE_TEST')),
);

function ckpt(args: string[], env: NodeJS.ProcessEnv = {}) {
  const res = spawnSync(process.execPath, [join(ROOT, 'bin', 'ckpt.js'), ...args], {
    cwd: ROOT,
    env: { ...ENV, ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  const error = /^ckpt: error: (.*)$/m.exec(res.stderr)?.[1];
  return {
    code: res.status,
    stdout: res.stdout,
    error: error === undefined ? res.stderr : `${res.status}: ${error}`,
  };
}

describe('ckpt logits', () => {
  const work = tempDir();
  const dir = join(work, 'd4');
  const tokensFile = join(work, 'tokens.json');
  let tokens: number[];
  let expected: Float32Array;

  before(async () => {
    ({ tokens, logits: expected } = await nanochatReference());
    writeFileSync(tokensFile, JSON.stringify(tokens));
    importNanochatFixture(dir);
  });

  for (const backend of ['cpu', 'wasm']) {
    it(`--json: positions × vocab_size logits, within 1e-4 of nanochat's (${backend})`, () => {
      const run = ckpt(['logits', dir, '--tokens-file', tokensFile, '--json'], { CKPT_BACKEND: backend });
      assert.equal(run.code, 0, run.error);
      const rows = JSON.parse(run.stdout) as number[][];
      assert.equal(rows.length, tokens.length);
      let maxDelta = 0;
      rows.forEach((row, t) => {
        assert.equal(row.length, 257);
        row.forEach((v, i) => (maxDelta = Math.max(maxDelta, Math.abs(v - expected[t * 257 + i]!))));
      });
      assert.ok(maxDelta <= 1e-4, `max |Δlogit| ${maxDelta}`);
    });
  }

  it('without --json: one line per position with the argmax; the step defaults to the last', () => {
    const run = ckpt(['logits', dir, '--tokens', tokens.slice(0, 3).join(',')]);
    assert.equal(run.code, 0, run.error);
    const lines = run.stdout.trim().split('\n');
    assert.equal(lines[0], 'position\ttoken\targmax\tlogit');
    assert.equal(lines.length, 4);
    const [position, token, next, logit] = lines[3]!.split('\t');
    assert.equal(position, '2');
    assert.equal(Number(token), tokens[2]);
    const row = expected.subarray(2 * 257, 3 * 257);
    assert.equal(Number(next), row.indexOf(Math.max(...row)));
    assert.ok(Math.abs(Number(logit) - Math.max(...row)) < 1e-4);
  });

  it("--text: the checkpoint's tokenizer ids after BOS (here bytes)", () => {
    const text = ckpt(['logits', dir, '--text', 'Hi', '--json']);
    assert.equal(text.code, 0, text.error);
    const ids = ckpt(['logits', dir, '--tokens', '256,72,105', '--json']);
    assert.equal(text.stdout, ids.stdout);
  });

  it('refuses bad tokens with exit 2, naming the flag', () => {
    assert.match(ckpt(['logits', dir]).error, /^2: logits: give the tokens with exactly one of/);
    assert.match(
      ckpt(['logits', dir, '--tokens', '1,2', '--text', 'x']).error,
      /^2: logits: give the tokens with exactly one of/,
    );
    assert.match(
      ckpt(['logits', dir, '--tokens', '1,x,3']).error,
      /^2: --tokens: token 1 is "x", not a token id/,
    );
    assert.match(
      ckpt(['logits', dir, '--tokens', '1,257']).error,
      /^2: --tokens: token 1 is 257, outside the vocabulary \(vocab_size 257\)/,
    );
    const long = join(work, 'long.json');
    writeFileSync(long, JSON.stringify(new Array(513).fill(1)));
    assert.match(
      ckpt(['logits', dir, '--tokens-file', long]).error,
      /^2: --tokens-file: 513 tokens, more than sequence_len \(512\)/,
    );
    writeFileSync(long, '{"tokens": [1]}');
    assert.match(
      ckpt(['logits', dir, '--tokens-file', long]).error,
      /^2: --tokens-file .* must hold a JSON array/,
    );
  });
});
