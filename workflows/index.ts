export * from './pipeline';
export * from './maintenance';
export type { WorkflowSettings } from './options';
