/** Multi-rank data plane: a TCP process group with deterministic collectives (see process-group.ts). */
export * from './errors';
export {
  initProcessGroup,
  fromEnv,
  optionsFromEnv,
  evenCounts,
  type ProcessGroup,
  type ProcessGroupOptions,
  type ReduceOp,
} from './process-group';
