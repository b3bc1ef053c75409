import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { TokenizerMismatchError } from '../../model/errors';
import { BOS_ID, ByteTokenizer, checkTokenizer } from '../../model/tokenizer';

const tok = new ByteTokenizer();

test('UTF-8 bytes in, text out; BOS optional and dropped on decode', () => {
  const text = 'héllo, wörld ✓ 🦊\n';
  const ids = tok.encode(text);
  assert.deepEqual(ids, [...Buffer.from(text, 'utf8')]);
  assert.equal(tok.decode(ids), text);
  assert.deepEqual(tok.encode('ab', { bos: true }), [BOS_ID, 97, 98]);
  assert.equal(tok.decode([BOS_ID, 104, 105, BOS_ID]), 'hi');
  assert.equal(tok.decode([0xe2, 0x9c]), '\uFFFD'); // a character cut in half
  assert.throws(() => tok.decode([300]), RangeError);
  assert.throws(() => tok.decode([-1]), RangeError);
  assert.equal(tok.vocabSize, 257);
});

test('identity: kind, vocab_size and the sha256 of a canonical description, stable across instances', () => {
  const id = tok.identity();
  assert.equal(id.kind, 'byte');
  assert.equal(id.vocab_size, 257);
  assert.equal(id.hash, createHash('sha256').update(tok.description()).digest('hex'));
  assert.deepEqual(new ByteTokenizer().identity(), id);
  assert.match(id.hash, /^[0-9a-f]{64}$/);
});

test('checkTokenizer names the field that differs', () => {
  const id = tok.identity();
  checkTokenizer(id, tok);
  checkTokenizer(JSON.parse(JSON.stringify(id)), id);
  const fieldOf = (recorded: unknown) => {
    try {
      checkTokenizer(recorded, tok);
    } catch (err) {
      assert.ok(err instanceof TokenizerMismatchError);
      return err.field;
    }
    return undefined;
  };
  assert.equal(fieldOf({ ...id, kind: 'bpe' }), 'tokenizer.kind');
  assert.equal(fieldOf({ ...id, vocab_size: 65536 }), 'tokenizer.vocab_size');
  assert.equal(fieldOf({ ...id, hash: '0'.repeat(64) }), 'tokenizer.hash');
  assert.equal(fieldOf('byte'), 'tokenizer');
  assert.equal(fieldOf(null), 'tokenizer');
});
