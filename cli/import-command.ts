/**
 * `ckpt import FILE.safetensors DIR --step N [--config JSON]`: commit weights converted elsewhere (e.g. a
 * PyTorch state_dict written with safetensors.torch.save_file) as a checkpoint. With --config the tensors
 * are checked against the GPT that config describes (names and shapes, after the load-time migrations)
 * before anything is written, so the result builds with buildModel / eval / sample. Pickles are refused.
 */
import { readFileSync } from 'node:fs';
import { importSafetensors, type Meta, type NamedTensors, type SaveDtype } from '../checkpoint';
import {
  ARCHITECTURES,
  NANOCHAT_ARCHITECTURE,
  normalizeConfig,
  parameterShapes,
  type GPTConfig,
} from '../model/config';
import { checkTensorSet } from '../model/tensors';
import { ByteTokenizer, loadTokenizer, tokenizerRecord } from '../model/tokenizer';
// The GPT's checkpoint migrations: the import checks tensors as a load will see them.
import '../model/migrations';
import {
  type Command,
  expectPositionals,
  flag,
  humanBytes,
  note,
  out,
  positional,
  step as stepArg,
  str,
  UsageError,
} from './args';

/** A JSON object given inline (`{...}`) or as the path of a JSON file. */
export function jsonObjectArg(value: string, flagName: string): Record<string, unknown> {
  const text = value.trimStart().startsWith('{') ? value : readJsonFile(value, flagName);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--${flagName}: not valid JSON (${(err as Error).message})`, { field: flagName });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new UsageError(`--${flagName} must be a JSON object`, { field: flagName });
  }
  return parsed as Record<string, unknown>;
}

function readJsonFile(path: string, flagName: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(
      `--${flagName}: "${path}" is neither inline JSON nor a readable file (${(err as Error).message})`,
      {
        field: flagName,
      },
    );
  }
}

/** The model config from --config: the config object itself, or a meta file that holds one (nanochat's meta_<step>.json). */
export function modelConfigArg(value: string): Record<string, unknown> {
  const obj = jsonObjectArg(value, 'config');
  const inner = obj.model_config;
  if (inner !== undefined) {
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) {
      throw new UsageError('--config: "model_config" must be a JSON object', { field: 'config' });
    }
    return inner as Record<string, unknown>;
  }
  return obj;
}

const DEFAULT_ARCHITECTURE = Object.keys(ARCHITECTURES).find(
  (name) => ARCHITECTURES[name] === NANOCHAT_ARCHITECTURE,
)!;

/**
 * The model config to record: the given one with every architecture constant it lacks taken from the named
 * architecture (default: nanochat's current one), so that the checkpoint says what it computes. A constant
 * the config gives that contradicts an architecture named with --architecture is refused.
 */
export function completeArchitecture(
  given: Record<string, unknown>,
  name: string | undefined,
): Record<string, unknown> {
  const names = Object.keys(ARCHITECTURES);
  if (name !== undefined && !Object.hasOwn(ARCHITECTURES, name)) {
    throw new UsageError(`--architecture must be one of ${names.join(', ')}, got "${name}"`, {
      field: 'architecture',
    });
  }
  const architecture = ARCHITECTURES[name ?? DEFAULT_ARCHITECTURE]!;
  const out = { ...given };
  for (const [key, value] of Object.entries(architecture)) {
    if (out[key] === undefined) out[key] = value;
    else if (name !== undefined && out[key] !== value) {
      throw new UsageError(
        `--config sets ${key} = ${JSON.stringify(out[key])}, but --architecture ${name} has ${JSON.stringify(value)}`,
        { field: `model_config.${key}` },
      );
    }
  }
  return out;
}

/** Refuse tensors that would not build the GPT of `meta.model_config` (every name, every shape). */
export function checkGptTensors(tensors: NamedTensors, meta: Meta): void {
  const config = normalizeConfig(meta.model_config as Partial<GPTConfig>);
  const recorded = meta.tokenizer as { kind?: string; vocab_size?: number } | undefined;
  const vocab = recorded?.vocab_size ?? new ByteTokenizer().vocabSize;
  if (config.vocab_size < vocab) {
    throw new UsageError(
      `model_config.vocab_size ${config.vocab_size} is smaller than the ${recorded?.kind ?? 'byte'} tokenizer's ${vocab}`,
      { field: 'model_config.vocab_size' },
    );
  }
  const expected = Object.fromEntries(
    Object.entries(parameterShapes(config)).map(([n, shape]) => [n, { shape, dtype: 'float' }]),
  );
  const isFloat = (d: string) => d === 'F32' || d === 'F16' || d === 'BF16' || d === 'F64';
  checkTensorSet(
    'imported tensors',
    expected,
    Object.entries(tensors).map(([n, t]) => [
      n,
      { shape: t.shape, dtype: isFloat(t.dtype) ? 'float' : t.dtype },
    ]),
  );
}

const DTYPES: Record<string, SaveDtype | undefined> = {
  keep: undefined,
  f32: 'F32',
  bf16: 'BF16',
  f16: 'F16',
};

export const importCommand: Command = {
  name: 'import',
  summary:
    'Commit the tensors of a safetensors file (e.g. converted from PyTorch) as a checkpoint; pickles are never read.',
  usage:
    'ckpt import FILE.safetensors DIR --step N [--config JSON|FILE [--architecture NAME]] [--meta JSON|FILE]\n' +
    '           [--tokenizer FILE.json] [--save-dtype keep|f32|bf16|f16] [--json]\n' +
    '\n' +
    '--config: the model config (nanochat keys), inline or a JSON file; a meta file with a "model_config" works\n' +
    'too. With it, every tensor name and shape is checked against that GPT before anything is written; without\n' +
    'it, the tensors are committed as they are and load with loadCheckpoint, but build no model.\n' +
    '--architecture: the GPT the weights were trained as; it fills the constants --config lacks (rotary base,\n' +
    `q/k scale, ...). One of: ${Object.keys(ARCHITECTURES).join(', ')}.\n` +
    `Default ${DEFAULT_ARCHITECTURE}, nanochat's current GPT.\n` +
    '--tokenizer: a nanochat tokenizer converted by scripts/nanochat-tokenizer.py; eval, sample and logits of\n' +
    'the checkpoint then use it (its path and identity go into the meta). Default: the byte tokenizer.\n' +
    '--save-dtype: default keep (each tensor as stored in the file). Refused if step N is already committed.',
  options: {
    step: { type: 'string' },
    config: { type: 'string' },
    architecture: { type: 'string' },
    meta: { type: 'string' },
    tokenizer: { type: 'string' },
    'save-dtype': { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(args) {
    expectPositionals(args, 2, 'import');
    const file = positional(args, 0, 'FILE', 'import');
    const dir = positional(args, 1, 'DIR', 'import');
    const step = stepArg(args);
    if (step === undefined) throw new UsageError('import: --step N is required', { field: 'step' });
    const dtypeName = (str(args, 'save-dtype') ?? 'keep').toLowerCase();
    if (!(dtypeName in DTYPES)) {
      throw new UsageError(`--save-dtype must be keep, f32, bf16 or f16, got "${dtypeName}"`, {
        field: 'save-dtype',
      });
    }
    const configText = str(args, 'config');
    const metaText = str(args, 'meta');
    const architecture = str(args, 'architecture');
    if (architecture !== undefined && configText === undefined) {
      throw new UsageError('--architecture describes the model of --config: give --config too', {
        field: 'architecture',
      });
    }
    const modelConfig =
      configText === undefined ? undefined : completeArchitecture(modelConfigArg(configText), architecture);
    const tokenizerFile = str(args, 'tokenizer');
    const tokenizer =
      tokenizerFile === undefined
        ? {}
        : { tokenizer: tokenizerRecord(loadTokenizer(tokenizerFile), tokenizerFile) };
    const result = await importSafetensors(file, dir, {
      step,
      modelConfig,
      meta: { ...(metaText === undefined ? {} : jsonObjectArg(metaText, 'meta')), ...tokenizer },
      saveDtype: DTYPES[dtypeName],
      check: modelConfig ? checkGptTensors : undefined,
    });
    if (!modelConfig)
      note('no --config: committed as plain tensors (loadCheckpoint reads them; no model builds from them)');
    if (flag(args, 'json')) {
      out(JSON.stringify(result, null, 2));
    } else {
      const bytes = Object.values(result.files).reduce((sum, f) => sum + f.bytes, 0);
      out(
        `imported ${result.tensors} tensors from ${result.source.file} as step ${result.step} in ${result.location} (${humanBytes(bytes)})`,
      );
    }
    return 0;
  },
};
