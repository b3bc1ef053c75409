import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { applyMigrations, saveCheckpoint, type Meta, type NamedTensors } from '../../checkpoint';
import { initBackend, type BackendChoice } from '../../model/backend';
import { buildModel } from '../../model/build';
import { ConfigError } from '../../model/errors';
import { GPT, LEGACY_ARCHITECTURE, NANOCHAT_ARCHITECTURE, normalizeConfig } from '../../model/gpt';
import { gptProgram } from '../../model/program';
import { ByteTokenizer } from '../../model/tokenizer';
import { tempDir } from '../helpers/tmp';

// A model config as checkpoints recorded it before the architecture constants existed.
const OLD_MODEL_CONFIG = {
  sequence_len: 16,
  vocab_size: 257,
  n_layer: 3,
  n_head: 4,
  n_kv_head: 2,
  n_embd: 32,
  window_pattern: 'SL',
};

/**
 * sha256 of the logits that the previous version of the model (before the architecture revisions) computed
 * for legacyWeights() and TOKENS, per backend: the revisions must not change a bit of them.
 */
const LEGACY_LOGITS_SHA256: Partial<Record<BackendChoice, string>> = {
  cpu: '117f398a7d0468778edbbcde6b081d92ce720c8cebbf4301de3e3e07314c5d4f',
  wasm: '3499e72888eb69f766444c9aa0508a3d0521ac7389ff19843b4745525ec71c66',
};
const TOKENS = Int32Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 257);

/** Initialised weights with a deterministic perturbation, so every layer (c_proj starts at zero) matters. */
async function legacyWeights(): Promise<NamedTensors> {
  const { tf } = await initBackend({ force: 'cpu', log: () => undefined });
  const init = GPT.initialize(tf, normalizeConfig({ ...OLD_MODEL_CONFIG, ...LEGACY_ARCHITECTURE }), 7);
  const named = init.namedTensors();
  init.dispose();
  Object.values(named).forEach((t, k) => {
    const d = t.data as Float32Array;
    for (let j = 0; j < d.length; j++) d[j] = d[j]! + 0.05 * Math.sin(j * 0.37 + k);
  });
  return named;
}

function sha256(values: Float32Array): string {
  return createHash('sha256')
    .update(Buffer.from(values.buffer, values.byteOffset, values.byteLength))
    .digest('hex');
}

describe('checkpoints from before the architecture constants compute exactly what they computed', () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    it(`builds the legacy architecture from a meta without the constants, bit for bit (${backend})`, async () => {
      const dir = tempDir();
      await saveCheckpoint(dir, 5, {
        model: await legacyWeights(),
        meta: { model_config: OLD_MODEL_CONFIG, tokenizer: new ByteTokenizer().identity() },
      });
      const { model, meta, migrations } = await buildModel(dir, 5, { phase: 'eval', backend });
      try {
        assert.ok(migrations.includes('architecture-constants'));
        assert.deepEqual(model.config, { ...OLD_MODEL_CONFIG, ...LEGACY_ARCHITECTURE });
        assert.deepEqual(meta.model_config, model.config);
        const { tf } = await initBackend({ force: backend, log: () => undefined });
        const logits = tf.tidy(
          () => model.logits(tf.tensor2d(TOKENS, [2, 16], 'int32')).dataSync() as Float32Array,
        );
        assert.equal(sha256(logits), LEGACY_LOGITS_SHA256[backend]);
      } finally {
        model.dispose();
      }
    });
  }

  it('completes the program config too, so a resumed run keeps the legacy architecture', () => {
    const meta = {
      step: 3,
      world_size: 1,
      format_version: 1,
      program: { name: 'gpt', version: 1 },
      model_config: { ...OLD_MODEL_CONFIG },
      config: { ...OLD_MODEL_CONFIG, data: '/data/corpus.txt' },
    } as unknown as Meta;
    const { meta: patched } = applyMigrations(meta, null);
    const config = gptProgram.configure(patched.config as Record<string, unknown>);
    assert.deepEqual(config, { ...OLD_MODEL_CONFIG, ...LEGACY_ARCHITECTURE, data: '/data/corpus.txt' });
  });

  it('leaves recorded constants alone', () => {
    const recorded = { ...OLD_MODEL_CONFIG, ...NANOCHAT_ARCHITECTURE };
    const meta = { step: 1, world_size: 1, format_version: 1, model_config: recorded } as unknown as Meta;
    assert.deepEqual(applyMigrations(meta, null).meta.model_config, recorded);
  });
});

describe('new models are nanochat 92d63d4 and record every constant', () => {
  it('the default config carries every architecture constant with nanochat values', () => {
    const config = gptProgram.configure({});
    // As nanochat/gpt.py at 92d63d4 has them.
    assert.equal(config.rotary_base, 100000);
    assert.equal(config.qk_scale, 1.2);
    assert.equal(config.short_window, 'quarter-ceil128');
    assert.equal(config.vocab_multiple, 64);
    for (const [key, value] of Object.entries(NANOCHAT_ARCHITECTURE)) {
      assert.equal((config as unknown as Record<string, unknown>)[key], value, key);
    }
  });

  it('a constant this code does not know is refused, naming it', () => {
    assert.throws(
      () => normalizeConfig({ ...OLD_MODEL_CONFIG, rope_scaling: 2 } as never),
      (err: unknown) => err instanceof ConfigError && err.field === 'rope_scaling' && err.exitCode === 2,
    );
  });
});
