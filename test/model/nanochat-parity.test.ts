/**
 * The built-in GPT computes what nanochat's own GPT computes: test/fixtures/nanochat holds a nanochat state
 * dict, its meta, tokens and the logits nanochat 92d63d4 computed for them under PyTorch on the CPU in float32
 * (written by scripts/nanochat-parity.py; see docs/import.md). The checkpoint goes through `ckpt import`,
 * builds with buildModel, and its logits must agree within 1e-4 with the same argmax at every position.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { initBackend, type BackendChoice } from '../../model/backend';
import { buildModel } from '../../model/build';
import { GPT, normalizeConfig, type GPTConfig } from '../../model/gpt';
import { loads } from '../helpers/installed';
import {
  importNanochatFixture,
  NANOCHAT_META,
  NANOCHAT_MODEL,
  nanochatReference,
  readTensors,
} from '../helpers/nanochat-fixture';
import { tempDir } from '../helpers/tmp';

const TOLERANCE = 1e-4;
const BACKENDS: BackendChoice[] = [
  'cpu',
  'wasm',
  ...(loads('@tensorflow/tfjs-node') ? ['tensorflow' as const] : []),
];

/** max |Δ| over all logits, and the positions whose argmax differs. */
function compare(
  got: ArrayLike<number>,
  want: Float32Array,
  vocab: number,
): { maxDelta: number; argmaxDiffers: number[] } {
  assert.equal(got.length, want.length);
  let maxDelta = 0;
  const argmaxDiffers: number[] = [];
  for (let t = 0; t < want.length / vocab; t++) {
    let a = 0;
    let b = 0;
    for (let v = 0; v < vocab; v++) {
      const i = t * vocab + v;
      maxDelta = Math.max(maxDelta, Math.abs(got[i]! - want[i]!));
      if (got[i]! > got[t * vocab + a]!) a = v;
      if (want[i]! > want[t * vocab + b]!) b = v;
    }
    if (a !== b) argmaxDiffers.push(t);
  }
  return { maxDelta, argmaxDiffers };
}

describe("nanochat parity: a nanochat checkpoint imports and computes nanochat's logits", () => {
  const dir = join(tempDir(), 'base_checkpoints', 'd4');
  let ref: { tokens: number[]; logits: Float32Array };

  before(async () => {
    ref = await nanochatReference();
    importNanochatFixture(dir);
  });
  for (const backend of BACKENDS) {
    it(`max |Δlogit| <= ${TOLERANCE} and the same argmax everywhere (${backend})`, async (t) => {
      const { model } = await buildModel(dir, 0, { phase: 'eval', backend });
      try {
        const { tf } = await initBackend({ force: backend, log: () => undefined });
        const T = ref.tokens.length;
        const logits = tf.tidy(() =>
          model.logits(tf.tensor2d(Int32Array.from(ref.tokens), [1, T], 'int32')).dataSync(),
        );
        const { maxDelta, argmaxDiffers } = compare(logits, ref.logits, model.config.vocab_size);
        t.diagnostic(`${backend}: max |Δlogit| ${maxDelta.toExponential(2)} over ${T} positions`);
        assert.ok(maxDelta <= TOLERANCE, `max |Δlogit| ${maxDelta} > ${TOLERANCE}`);
        assert.deepEqual(argmaxDiffers, []);
      } finally {
        model.dispose();
      }
    });
  }

  it('the import recorded the padded vocabulary and every architecture constant', async () => {
    const meta = JSON.parse(readFileSync(join(dir, 'meta_000000.json'), 'utf8')) as {
      model_config: GPTConfig;
    };
    assert.equal(meta.model_config.vocab_size, 257);
    assert.equal(meta.model_config.vocab_multiple, 64);
    assert.equal(meta.model_config.rotary_base, 100000);
    assert.equal(meta.model_config.qk_scale, 1.2);
    assert.equal(meta.model_config.short_window, 'quarter-ceil128');
  });

  // The fixture tells each parameterless constant apart: with another value the logits move far past the
  // tolerance (so the parity above cannot pass by accident).
  for (const change of [
    { rotary_base: 10000 },
    { qk_scale: 1 },
    { short_window: 'half' },
    { logit_softcap: 20 },
    { ve_gate_scale: 2 },
  ] as Partial<GPTConfig>[]) {
    it(`a model built with ${JSON.stringify(change)} instead is refused by the comparison`, async () => {
      const { tf } = await initBackend({ force: 'wasm', log: () => undefined });
      const meta = JSON.parse(readFileSync(NANOCHAT_META, 'utf8')) as {
        model_config: Partial<GPTConfig>;
      };
      const config = normalizeConfig({ ...meta.model_config, ...change });
      const model = GPT.fromNamedTensors(tf, config, await readTensors(NANOCHAT_MODEL));
      try {
        const T = ref.tokens.length;
        const logits = tf.tidy(() =>
          model.logits(tf.tensor2d(Int32Array.from(ref.tokens), [1, T], 'int32')).dataSync(),
        );
        assert.ok(compare(logits, ref.logits, config.vocab_size).maxDelta > 100 * TOLERANCE);
      } finally {
        model.dispose();
      }
    });
  }
});
