/**
 * What the loop records about a program in every checkpoint's meta (`program`, `config`, `loop`), and how
 * a resumed run's settings are decided: the checkpoint's, with what the user gave laid over them, and a
 * flag that contradicts the checkpoint refused by name (it would change the run's trajectory).
 */
import { CheckpointError, InvalidArgumentError } from '../checkpoint/errors';
import type { Meta } from '../checkpoint/manifest';
import { DEFAULT_SCHEDULE, validateSchedule, type ScheduleConfig } from '../train/schedule';
import { RUN_SETTING_KEYS, RUN_SETTINGS } from '../train/settings';
import type { LoopSettings, TrainingProgram } from './contract';
import { ProgramConfigError, ProgramMismatchError } from './errors';

/** Checkpoints from before programs existed were all written by the built-in GPT, version 1. */
export const LEGACY_PROGRAM = { name: 'gpt', version: 1 } as const;

export interface ProgramRecord {
  name: string;
  version: number;
}

export function programRecord(program: TrainingProgram<unknown>): ProgramRecord {
  return { name: program.name, version: program.version };
}

/** The program a checkpoint's meta names (the legacy GPT when it names none). */
export function recordedProgram(meta: Meta): ProgramRecord {
  const p = meta.program as Partial<ProgramRecord> | undefined;
  if (p && typeof p.name === 'string' && typeof p.version === 'number')
    return { name: p.name, version: p.version };
  return { ...LEGACY_PROGRAM };
}

/** Refuse a checkpoint that another program, or a newer version of this one, wrote. */
export function checkProgramMeta(program: TrainingProgram<unknown>, meta: Meta, file: string): void {
  const recorded = recordedProgram(meta);
  if (recorded.name !== program.name) {
    throw new ProgramMismatchError(
      `${file} was written by program "${recorded.name}"; program "${program.name}" cannot resume or build it ` +
        `(give --program the path or registered name of "${recorded.name}", or use another --tag)`,
      { file, field: 'program', step: meta.step },
    );
  }
  if (recorded.version > program.version) {
    throw new ProgramMismatchError(
      `${file} was written by version ${recorded.version} of program "${program.name}", newer than the version ` +
        `loaded here (${program.version}); upgrade the program`,
      { file, field: 'program.version', step: meta.step },
    );
  }
}

/** The program's config from `given`; any error it throws is bad input (exit 2), named as the program's. */
export function configureProgram<C>(program: TrainingProgram<C>, given: Record<string, unknown>): C {
  try {
    return program.configure(given);
  } catch (err) {
    if (err instanceof CheckpointError) throw err;
    throw new ProgramConfigError(`program "${program.name}": bad config: ${(err as Error).message}`, {
      field: 'config',
    });
  }
}

/** What the user set for one run (the CLI's flags or a pipeline's input), before defaults. */
export interface GivenRunSettings {
  config?: Record<string, unknown>;
  /** Config keys by the flag that set them, so a contradiction names what the user typed. */
  configFlags?: Record<string, string>;
  seed?: number;
  batch?: number;
  schedule?: Partial<ScheduleConfig>;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

function refuseClash(flag: string, given: unknown, was: unknown): void {
  if (given === undefined || same(given, was)) return;
  throw new InvalidArgumentError(
    `--${flag} ${typeof given === 'string' ? given : JSON.stringify(given)} contradicts the checkpoint being ` +
      `resumed (${flag} = ${typeof was === 'string' ? was : JSON.stringify(was)}); drop the flag or start a new tag`,
    { field: flag },
  );
}

/** The program config and loop settings of a run: fresh from what was given, or on resume from meta. */
export function resolveRunConfig<C>(
  program: TrainingProgram<C>,
  given: GivenRunSettings,
  meta: Meta | undefined,
): { config: C; loop: LoopSettings } {
  const loopOwnsOptimizer = program.optimizer === 'loop';
  const s = given.schedule ?? {};
  if (!loopOwnsOptimizer) {
    // The schedule object names the schedule's kind `kind`; the setting (and its flag) is `schedule`.
    const inSchedule = (k: string) =>
      s[(k === 'schedule' ? 'kind' : k) as keyof ScheduleConfig] !== undefined;
    const key = RUN_SETTING_KEYS.find((k) => 'loopOptimizer' in RUN_SETTINGS[k] && inSchedule(k));
    if (key) {
      const name = RUN_SETTINGS[key].flag;
      throw new InvalidArgumentError(
        `--${name} sets the loop's optimizer, but program "${program.name}" owns its optimizer: set it in --config`,
        { field: name },
      );
    }
  }
  const userConfig = given.config ?? {};
  const savedConfig = meta?.config as Record<string, unknown> | undefined;
  const savedLoop = meta?.loop as LoopSettings | undefined;
  if (savedConfig) {
    for (const [key, value] of Object.entries(userConfig)) {
      // By key, not by the flag typed: a pipeline's segments pass the same keys through --config.
      const free = Object.values(program.flags ?? {}).some((f) => f.key === key && f.mayChangeOnResume);
      if (free) continue;
      const flag = given.configFlags?.[key] ?? `config ${key}`;
      if (!(key in savedConfig)) {
        throw new InvalidArgumentError(
          `--${flag} is not in the config of the checkpoint being resumed; drop it or start a new tag`,
          { field: flag },
        );
      }
      refuseClash(flag, value, savedConfig[key]);
    }
  }
  const config = configureProgram(program, { ...(savedConfig ?? {}), ...userConfig });
  if (!savedLoop) {
    return {
      config,
      loop: {
        seed: given.seed ?? 0,
        batch: given.batch ?? program.defaultBatch ?? 8,
        ...(loopOwnsOptimizer ? { schedule: validateSchedule({ ...DEFAULT_SCHEDULE, ...s }) } : {}),
      },
    };
  }
  refuseClash('seed', given.seed, savedLoop.seed);
  refuseClash('batch', given.batch, savedLoop.batch);
  if (savedLoop.schedule) {
    refuseClash('lr', s.lr, savedLoop.schedule.lr);
    refuseClash('schedule', s.kind, savedLoop.schedule.kind);
    refuseClash('warmup', s.warmup, savedLoop.schedule.warmup);
    refuseClash('horizon', s.horizon, savedLoop.schedule.horizon);
  }
  return { config, loop: savedLoop };
}
