/**
 * The run settings the loop owns, defined once. The `ckpt train` and `ckpt pipeline start` flags, their
 * help, the typed RunSettings a pipeline carries to its segments, the arguments of a training child and
 * the `loop` key of every checkpoint's meta all derive from RUN_SETTINGS; a program's own settings come
 * from its `flags` and `--config`.
 */
import { InvalidArgumentError } from '../checkpoint/errors';

interface Spec {
  readonly flag: string;
  readonly type: 'int' | 'number' | 'enum' | 'string';
  readonly help: string;
  readonly min?: number;
  readonly values?: readonly string[];
  /** Only for programs whose optimizer the loop owns (the learning-rate schedule). */
  readonly loopOptimizer?: boolean;
}

export const RUN_SETTINGS = {
  seed: {
    flag: 'seed',
    type: 'int',
    min: 0,
    help: 'seed of the initialisation and the data order (default 0)',
  },
  batch: { flag: 'batch', type: 'int', min: 1, help: 'global batch: samples per step over all ranks' },
  lr: { flag: 'lr', type: 'number', help: 'peak learning rate (default 3e-3)', loopOptimizer: true },
  schedule: {
    flag: 'schedule',
    type: 'enum',
    values: ['constant', 'cosine'],
    help: 'learning-rate schedule (default constant)',
    loopOptimizer: true,
  },
  warmup: { flag: 'warmup', type: 'int', min: 0, help: 'warm-up steps (default 10)', loopOptimizer: true },
  horizon: {
    flag: 'horizon',
    type: 'int',
    min: 1,
    help: 'steps of the cosine schedule, independent of --steps (default 1000)',
    loopOptimizer: true,
  },
  saveDtype: {
    flag: 'save-dtype',
    type: 'enum',
    values: ['f32', 'bf16', 'f16'],
    help: 'dtype of saved model tensors (optimizer state stays f32)',
  },
} as const satisfies Record<string, Spec>;

type Specs = typeof RUN_SETTINGS;
type ValueOf<S> = S extends { type: 'enum'; values: readonly (infer V)[] }
  ? V
  : S extends { type: 'int' | 'number' }
    ? number
    : string;

/** What a user set of the loop's settings; unset ones come from defaults or the checkpoint. */
export type RunSettings = { -readonly [K in keyof Specs]?: ValueOf<Specs[K]> };

export const RUN_SETTING_KEYS = Object.keys(RUN_SETTINGS) as Array<keyof Specs>;

/** parseArgs options for the run settings. */
export function runSettingOptions(): Record<string, { type: 'string' }> {
  return Object.fromEntries(RUN_SETTING_KEYS.map((k) => [RUN_SETTINGS[k].flag, { type: 'string' as const }]));
}

/** One help line per setting. */
export function runSettingsHelp(): string {
  return RUN_SETTING_KEYS.map((k) => {
    const s: Spec = RUN_SETTINGS[k];
    const value = s.type === 'enum' ? s.values!.join('|') : s.type === 'string' ? 'TEXT' : 'N';
    return `  --${`${s.flag} ${value}`.padEnd(24)} ${s.help}`;
  }).join('\n');
}

/** Parse and validate one flag's text as its spec says (InvalidArgumentError naming the flag). */
export function parseSetting(
  spec: Pick<Spec, 'flag' | 'type' | 'min' | 'values'>,
  text: string,
): number | string {
  const fail = (what: string): never => {
    throw new InvalidArgumentError(`--${spec.flag} must be ${what}, got "${text}"`, { field: spec.flag });
  };
  if (spec.type === 'int') {
    const n = Number(text);
    if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < (spec.min ?? -Infinity)) {
      fail(`an integer >= ${spec.min ?? 0}`);
    }
    return n;
  }
  if (spec.type === 'number') {
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n) || n < (spec.min ?? -Infinity)) fail('a number');
    return n;
  }
  if (spec.type === 'enum' && !spec.values!.includes(text)) fail(spec.values!.join(' or '));
  return text;
}

/** RunSettings from parsed flags (flag name → text). */
export function runSettingsFromFlags(values: Record<string, unknown>): RunSettings {
  const out: Record<string, number | string> = {};
  for (const key of RUN_SETTING_KEYS) {
    const text = values[RUN_SETTINGS[key].flag];
    if (typeof text === 'string') out[key] = parseSetting(RUN_SETTINGS[key], text);
  }
  return out as RunSettings;
}

/** The flags that give these settings (for a child process), in schema order. */
export function runSettingsToArgs(settings: RunSettings): string[] {
  const args: string[] = [];
  for (const key of RUN_SETTING_KEYS) {
    const value = settings[key];
    if (value !== undefined) args.push(`--${RUN_SETTINGS[key].flag}`, String(value));
  }
  return args;
}

/** The loop's schedule overrides from the settings. */
export function scheduleOf(settings: RunSettings): {
  lr?: number;
  kind?: 'constant' | 'cosine';
  warmup?: number;
  horizon?: number;
} {
  return {
    ...(settings.lr !== undefined ? { lr: settings.lr } : {}),
    ...(settings.schedule !== undefined ? { kind: settings.schedule } : {}),
    ...(settings.warmup !== undefined ? { warmup: settings.warmup } : {}),
    ...(settings.horizon !== undefined ? { horizon: settings.horizon } : {}),
  };
}
