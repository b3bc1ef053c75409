/**
 * Generation from a checkpoint by the program that wrote it: greedy at temperature 0, else sampling with a
 * seeded generator, so the same seed gives the same text.
 */
import { InvalidArgumentError, loadCheckpoint, log0, type Location } from '../checkpoint';
import type { BackendChoice } from '../model/backend';
import { initBackend } from '../model/backend';
import type { TrainingProgram } from '../program/contract';
import { programForCheckpoint, registerProgramMigrations } from '../program/load';

export interface SampleOptions {
  prompt: string;
  tokens?: number;
  temperature?: number;
  seed?: number;
  backend?: BackendChoice;
  /** The program that wrote the checkpoint (default: the one its meta names, if built in). */
  program?: TrainingProgram<unknown>;
}

export async function sampleText(dir: Location, step: number, options: SampleOptions): Promise<string> {
  if (options.program) registerProgramMigrations(options.program);
  const { meta } = await loadCheckpoint(dir, step, { loadModel: false, loadOptimizer: false });
  const { program, config, loop } = programForCheckpoint(meta, step, options.program);
  if (!program.sample) {
    throw new InvalidArgumentError(`program "${program.name}" does not generate samples`, {
      field: 'program',
    });
  }
  const { tf, name: backend } = await initBackend({ force: options.backend, log: (m) => log0(m) });
  return program.sample({
    tf,
    backend,
    loadModelTensors: async () => (await loadCheckpoint(dir, step, { loadOptimizer: false })).model!,
    dir,
    step,
    meta,
    config,
    loop,
    prompt: options.prompt,
    tokens: options.tokens ?? 64,
    temperature: options.temperature ?? 0,
    seed: options.seed ?? 0,
    log: (m) => log0(m, { step }),
  });
}
