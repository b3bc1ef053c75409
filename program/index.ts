/** `temporal-ckpt/program`: the training-program contract, and loading programs by name or path. */
export * from './contract';
export { ProgramLoadError, ProgramMismatchError, ProgramNotRegisteredError } from './errors';
export { BUILTIN_PROGRAMS, loadProgram, loadProgramModule, programProblems } from './load';
