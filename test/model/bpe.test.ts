/**
 * nanochat's BPE tokenizer, read from the converted file: test/fixtures/nanochat-tokenizer was written by
 * scripts/nanochat-tokenizer.py with nanochat's own tokenizer code (rustbpe trained it on
 * data/tiny-corpus.txt, tiktoken encoded the test text and the corpus).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from '../../checkpoint/errors';
import { BpeTokenizer, patternToJs } from '../../model/bpe';
import { ROOT } from '../helpers/cli';
import { tempDir } from '../helpers/tmp';

const FIXTURE = join(ROOT, 'test', 'fixtures', 'nanochat-tokenizer');
const TOKENIZER = join(FIXTURE, 'tokenizer.json');
const expected = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as {
  text: string;
  ids: number[];
  corpus_ids: number;
  corpus_ids_sha256: string;
  bos: number;
  vocab_size: number;
};

describe("nanochat's tokenizer encodes and decodes as tiktoken does", () => {
  const tokenizer = BpeTokenizer.fromFile(TOKENIZER);

  it('the test text: the same ids, and back to the same text', () => {
    assert.deepEqual(tokenizer.encode(expected.text), expected.ids);
    assert.equal(tokenizer.decode(expected.ids), expected.text);
  });

  it('the whole training corpus: the same ids', () => {
    const corpus = readFileSync(join(ROOT, 'data', 'tiny-corpus.txt'), 'utf8');
    const ids = tokenizer.encode(corpus);
    assert.equal(ids.length, expected.corpus_ids);
    assert.equal(createHash('sha256').update(JSON.stringify(ids)).digest('hex'), expected.corpus_ids_sha256);
  });

  it('vocabulary, BOS and identity', () => {
    assert.equal(tokenizer.vocabSize, expected.vocab_size);
    assert.equal(tokenizer.bos, expected.bos);
    assert.deepEqual(tokenizer.encode('hi', { bos: true }).slice(0, 1), [expected.bos]);
    assert.equal(tokenizer.decode([expected.bos]), '<|bos|>');
    const identity = tokenizer.identity();
    assert.equal(identity.kind, 'bpe');
    assert.equal(identity.vocab_size, 512);
    assert.match(identity.hash, /^[0-9a-f]{64}$/);
    assert.throws(() => tokenizer.decode([512]), RangeError);
  });
});

describe("the split pattern is rewritten from Rust's regex dialect", () => {
  it('possessive quantifiers become greedy, (?i:) is spelled out, \\s is White_Space', () => {
    assert.equal(patternToJs("'(?i:[sd]|ll)").source, "'(?:[sSdD]|[lL][lL])");
    assert.equal(patternToJs('[^\\r\\n\\p{L}]?+\\p{L}+').source, '[^\\r\\n\\p{L}]?\\p{L}+');
    assert.equal(
      patternToJs(' ?[^\\s\\p{N}]++\\p{N}{1,2}+').source,
      ' ?[^\\p{White_Space}\\p{N}]+\\p{N}{1,2}',
    );
    assert.equal(patternToJs('\\s+(?!\\S)').source, '\\p{White_Space}+(?!\\P{White_Space})');
    // U+0085 is white space to Rust, U+FEFF is not; JavaScript's \s has it the other way round.
    assert.deepEqual(
      [...'a\u0085\ufeffb'.matchAll(patternToJs('\\s+|\\S+'))].map((m) => m[0]),
      ['a', '\u0085', '\ufeffb'],
    );
  });

  it('refuses constructs it does not know', () => {
    assert.throws(() => patternToJs('(?<word>\\w+)'), /unsupported group/);
    assert.throws(() => patternToJs('(?x) a'), /unsupported group/);
    assert.throws(() => patternToJs('a{,2}'), /unsupported brace/);
  });
});

describe('a tokenizer file that is not right is refused, naming the file and the field', () => {
  const doc = JSON.parse(readFileSync(TOKENIZER, 'utf8')) as Record<string, unknown>;
  const refused = (change: Record<string, unknown>, field: string) => {
    const file = join(tempDir(), 'tokenizer.json');
    writeFileSync(file, JSON.stringify({ ...doc, ...change }));
    assert.throws(
      () => BpeTokenizer.fromFile(file),
      (err: unknown) =>
        err instanceof InvalidArgumentError &&
        err.field === field &&
        err.exitCode === 2 &&
        err.message.includes(file),
    );
  };

  it('format, ranks, special tokens, BOS, pattern', () => {
    refused({ format: 'pickle' }, 'format');
    refused({ ranks: (doc.ranks as string[]).slice(1) }, 'ranks');
    refused({ ranks: [...(doc.ranks as string[]), 'AA=='] }, 'ranks[503]');
    refused({ special_tokens: { '<|bos|>': 3 } }, 'special_tokens.<|bos|>');
    refused({ special_tokens: { '<|bos|>': 600 } }, 'special_tokens');
    refused({ bos: '<|eos|>' }, 'bos');
    refused({ pattern: '(?<x>a)' }, 'pattern');
  });
});
