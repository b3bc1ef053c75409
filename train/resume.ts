/**
 * Where a run starts: the resume choice resolved against a checkpoint directory, and the error a cancelled
 * run ends with. Kept apart from the training loop (trainer.ts), which loads the model backend: the command
 * runner and the CLI's settings need these without it.
 */
import {
  committedSteps,
  findLastStep,
  InvalidArgumentError,
  log0,
  NoCheckpointError,
  validateStep,
  type Store,
} from '../checkpoint';

/** Start fresh (refused when the directory has checkpoints), from the last committed step, or from a step. */
export type ResumeChoice = 'none' | 'last' | { step: number };

export class TrainingAborted extends Error {
  constructor(readonly step: number) {
    super(`training cancelled at step ${step}; nothing half-saved`);
    this.name = 'TrainingAborted';
  }
}

export async function resolveResume(store: Store, resume: ResumeChoice | undefined): Promise<number | null> {
  if (resume === 'none' || resume === undefined) {
    const existing = await committedSteps(store);
    if (existing.length > 0) {
      throw new InvalidArgumentError(
        `${store.location} already has checkpoints (last step ${existing[existing.length - 1]}); ` +
          'pass --resume to continue it, or choose another --tag',
        { field: 'resume' },
      );
    }
    return null;
  }
  if (resume === 'last') {
    try {
      return await findLastStep(store);
    } catch (err) {
      if (!(err instanceof NoCheckpointError)) throw err;
      if ((await committedSteps(store)).length > 0) throw err;
      log0(`no checkpoint in ${store.location} yet: starting from scratch`);
      return null;
    }
  }
  return validateStep(resume.step, 'resume-from-step');
}
