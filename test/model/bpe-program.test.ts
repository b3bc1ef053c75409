/**
 * The GPT program with nanochat's tokenizer (--tokenizer, a file scripts/nanochat-tokenizer.py converted):
 * training data, the checkpoint's tokenizer record, eval, sample, resume, and an imported checkpoint, all
 * through the CLI as a user runs them.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BpeTokenizer } from '../../model/bpe';
import { ckpt, ROOT } from '../helpers/cli';
import { tempDir } from '../helpers/tmp';

const TOKENIZER = join(ROOT, 'test', 'fixtures', 'nanochat-tokenizer', 'tokenizer.json');
const ENV = { CKPT_BACKEND: 'wasm' };
const TINY = ['--depth', '1', '--n-embd', '32', '--seq-len', '32', '--batch', '4'];

function errorOf(res: { code: number; stderr: string }): string {
  return `${res.code}: ${/^ckpt: error: (.*)$/m.exec(res.stderr)?.[1] ?? res.stderr}`;
}

describe('training, evaluating and sampling with a nanochat tokenizer', () => {
  const root = tempDir();
  const dir = join(root, 'base_checkpoints', 'd1');
  const tokenizer = BpeTokenizer.fromFile(TOKENIZER);

  it('trains on the tokenizer ids, its vocabulary the model vocabulary, and records it', () => {
    const res = ckpt(
      ['train', '--root', root, ...TINY, '--steps', '4', '--save-every', '2', '--tokenizer', TOKENIZER],
      ENV,
    );
    assert.equal(res.code, 0, res.stderr);
    const meta = JSON.parse(readFileSync(join(dir, 'meta_000004.json'), 'utf8')) as {
      model_config: { vocab_size: number };
      tokenizer: { kind: string; vocab_size: number; hash: string; path: string };
    };
    assert.equal(meta.model_config.vocab_size, 512);
    assert.deepEqual(meta.tokenizer, { ...tokenizer.identity(), path: TOKENIZER });
  });

  it('eval reports bits per byte of the text, sample decodes tokens back to text', () => {
    const evaluated = ckpt(['eval', dir, '--json'], ENV);
    assert.equal(evaluated.code, 0, evaluated.stderr);
    const metrics = JSON.parse(evaluated.stdout) as { val_bpb: number; val_loss: number; tokens: number };
    // Several bytes per token: bits per byte are well below the loss in bits per token.
    assert.ok(
      metrics.val_bpb > 0 && metrics.val_bpb < metrics.val_loss / Math.LN2 / 2,
      JSON.stringify(metrics),
    );
    const sampled = ckpt(['sample', dir, '--prompt', 'The worker', '--tokens', '6'], ENV);
    assert.equal(sampled.code, 0, sampled.stderr);
    const text = sampled.stdout.trimEnd();
    assert.ok(text.startsWith('The worker') && text.length > 'The worker'.length + 6, text);
  });

  it('resumes with the same tokenizer and refuses another one, naming the field', () => {
    const other = join(root, 'other.json');
    const doc = JSON.parse(readFileSync(TOKENIZER, 'utf8')) as { ranks: string[] };
    [doc.ranks[300], doc.ranks[301]] = [doc.ranks[301]!, doc.ranks[300]!];
    writeFileSync(other, JSON.stringify(doc));
    const refused = ckpt(
      ['train', '--root', root, '--depth', '1', '--steps', '6', '--resume', '--tokenizer', other],
      ENV,
    );
    assert.match(errorOf(refused), /^2: tokenizer hash differs/);
    const resumed = ckpt(
      ['train', '--root', root, '--depth', '1', '--steps', '6', '--save-every', '2', '--resume'],
      ENV,
    );
    assert.equal(resumed.code, 0, resumed.stderr);
  });

  it('an imported checkpoint takes --tokenizer and samples with it', () => {
    const imported = join(root, 'imported');
    const res = ckpt(
      [
        'import',
        join(dir, 'model_000006.safetensors'),
        imported,
        '--step',
        '6',
        '--config',
        join(dir, 'meta_000006.json'),
        '--tokenizer',
        TOKENIZER,
      ],
      ENV,
    );
    assert.equal(res.code, 0, res.stderr);
    const original = ckpt(['sample', dir, '--prompt', 'A', '--tokens', '5'], ENV);
    const copy = ckpt(['sample', imported, '--prompt', 'A', '--tokens', '5'], ENV);
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(copy.stdout, original.stdout);
    const small = ckpt(
      [
        'import',
        join(dir, 'model_000006.safetensors'),
        join(root, 'small'),
        '--step',
        '6',
        '--config',
        JSON.stringify({ n_layer: 1, n_embd: 32, sequence_len: 32, vocab_size: 257 }),
        '--tokenizer',
        TOKENIZER,
      ],
      ENV,
    );
    assert.match(errorOf(small), /^2: model_config\.vocab_size 257 is smaller than the bpe tokenizer's 512/);
  });
});
