/**
 * The Temporal SDK runtime of a worker process: its logs go through our pino logger, so a worker's stderr
 * is in one format (the SDK's own messages, the core's, workflow `log` calls and the activities' `ctx.log`
 * all pass through the runtime logger), and optionally the SDK's own Prometheus metrics are exported.
 * Install it once, before the first connection or worker of the process.
 */
import { DefaultLogger, Runtime, type LogLevel, type LogMetadata } from '@temporalio/worker';
import type { Logger } from 'pino';
import { DEFAULT_METRICS_HOST } from './metrics';

const SDK_LEVELS: Record<string, LogLevel> = {
  trace: 'TRACE',
  debug: 'DEBUG',
  info: 'INFO',
  warn: 'WARN',
  warning: 'WARN',
  error: 'ERROR',
  fatal: 'ERROR',
  silent: 'ERROR',
};

const PINO_METHODS: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

/** Errors as plain fields (pino would write an Error under any key but `err` as {}). */
function plainFields(meta: LogMetadata | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(meta ?? {})) {
    out[key] =
      value instanceof Error ? { type: value.name, message: value.message, stack: value.stack } : value;
  }
  return out;
}

/** A Temporal SDK logger that writes through `logger` at `level` (a pino level name) and above. */
export function sdkLogger(logger: Logger, level = 'info'): DefaultLogger {
  return new DefaultLogger(SDK_LEVELS[level] ?? 'INFO', (entry) => {
    logger[PINO_METHODS[entry.level]](plainFields(entry.meta), entry.message);
  });
}

export interface WorkerRuntimeOptions {
  logger: Logger;
  /** pino level name (CKPT_LOG_LEVEL). */
  level?: string;
  /** Export the SDK's own metrics (task slots, poll latencies, workflow and activity task counts...) here. */
  sdkMetricsPort?: number;
  /** The address the SDK's metrics listen on; default DEFAULT_METRICS_HOST (this host only). */
  metricsHost?: string;
}

export function installWorkerRuntime(options: WorkerRuntimeOptions): void {
  Runtime.install({
    logger: sdkLogger(options.logger, options.level),
    telemetryOptions: {
      // The Rust core's own messages (warnings and errors) through the same logger, not straight to stderr.
      logging: { forward: {} },
      ...(options.sdkMetricsPort !== undefined
        ? {
            metrics: {
              prometheus: {
                bindAddress: `${options.metricsHost ?? DEFAULT_METRICS_HOST}:${options.sdkMetricsPort}`,
              },
            },
          }
        : {}),
    },
  });
}
