/**
 * Evaluation of a committed checkpoint by the program that wrote it, written atomically beside the
 * checkpoint as eval_<step>.json with flat top-level metrics, which is what retention's keep-best ranks by.
 * The checkpoint is leased while it is read, so pruning cannot remove it from under the evaluation.
 */
import {
  evalFile,
  InvalidArgumentError,
  loadCheckpoint,
  log0,
  openStore,
  withLease,
  type Location,
} from '../checkpoint';
import { initBackend, type BackendChoice } from '../model/backend';
import type { TrainingProgram } from '../program/contract';
import { programForCheckpoint, registerProgramMigrations } from '../program/load';

export interface EvalOptions {
  dataFile?: string;
  backend?: BackendChoice;
  holder?: string;
  /** The program that wrote the checkpoint (default: the built-in one its meta names). */
  program?: TrainingProgram<unknown>;
  /** Called as the evaluation goes: units done so far, out of `total`. */
  onProgress?: (done: number, total: number) => void;
}

export interface EvalResult {
  step: number;
  /** The program's metrics, flat numbers (e.g. val_bpb, val_loss, tokens for the GPT). */
  metrics: Record<string, number>;
  /** The program's primary metric, by which "best" and keep-best rank. */
  metric: { name: string; mode: 'min' | 'max' };
  program: string;
  evaluated_at: string;
}

export async function evaluateCheckpoint(
  dir: Location,
  step: number,
  options: EvalOptions = {},
): Promise<EvalResult> {
  const store = openStore(dir);
  return withLease(
    store,
    step,
    { holder: options.holder ?? `eval-${process.pid}`, ttlMs: 10 * 60_000 },
    async () => {
      // A program loaded by path brings its own migrations: registered before the load applies them.
      if (options.program) registerProgramMigrations(options.program);
      const { meta } = await loadCheckpoint(store, step, { loadModel: false, loadOptimizer: false });
      const { program, config, loop } = programForCheckpoint(meta, step, options.program);
      const { tf, name: backend } = await initBackend({ force: options.backend, log: (m) => log0(m) });
      const metrics = await program.evaluate({
        tf,
        backend,
        loadModelTensors: async () => (await loadCheckpoint(store, step, { loadOptimizer: false })).model!,
        dir: store,
        step,
        meta,
        config,
        loop,
        data: options.dataFile,
        onProgress: options.onProgress,
        log: (m) => log0(m, { step }),
      });
      for (const [name, value] of Object.entries(metrics)) {
        if (typeof value !== 'number' || !Number.isFinite(value)) {
          throw new InvalidArgumentError(
            `program "${program.name}" evaluated step ${step} to a metric ${name} that is not a finite number`,
            { field: name, step },
          );
        }
      }
      if (typeof metrics[program.metric.name] !== 'number') {
        throw new InvalidArgumentError(
          `program "${program.name}" evaluated step ${step} without its primary metric ${program.metric.name}`,
          { field: program.metric.name, step },
        );
      }
      const result: EvalResult = {
        step,
        metrics,
        metric: program.metric,
        program: program.name,
        evaluated_at: new Date().toISOString(),
      };
      // Flat top-level numbers: what retention, reports and other tools read.
      const file = { step, ...metrics, program: program.name, evaluated_at: result.evaluated_at };
      await store.put(evalFile(step), Buffer.from(JSON.stringify(file, null, 2) + '\n'));
      return result;
    },
  );
}
