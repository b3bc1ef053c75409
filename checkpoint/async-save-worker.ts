/** Runs on AsyncSaver's worker thread: serialise, hash and publish one rank's files of a save. */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { SaveThreadMessage } from './async-save';
import { writeCheckpointFiles, type SaveData } from './checkpoint';
import { errorRecord } from './errors';
import { forwardLogging } from './log';
import { writeOnThisThread } from './local-store';
import { configureS3 } from './s3-store';

const post = (msg: SaveThreadMessage) => parentPort!.postMessage(msg);

// This thread has no logger settings of its own: the main thread writes its lines (async-save.ts).
forwardLogging((record) => post({ log: record }));
lowerThreadPriority();
writeOnThisThread();
if (workerData?.storeConfig) configureS3(workerData.storeConfig as Parameters<typeof configureS3>[0]);

parentPort!.on(
  'message',
  (msg: { id: number; dir: string; step: number; data: SaveData; options: Record<string, unknown> }) => {
    writeCheckpointFiles(msg.dir, msg.step, msg.data, msg.options).then(
      (files) => post({ id: msg.id, files }),
      (err: unknown) => post({ id: msg.id, error: errorRecord(err) }),
    );
  },
);

/**
 * Training comes first: this thread (serialising and checksumming a save) runs at nice 10, so on a busy
 * machine the scheduler gives the training thread the core when both want it. Linux only (setpriority on a
 * thread id affects that thread alone); elsewhere, or when refused, the thread keeps the default priority.
 */
function lowerThreadPriority(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isSafeInteger(tid) && tid > 0) setPriority(tid, 10);
  } catch {
    // Not Linux, or not allowed: the save still runs, at the process's priority.
  }
}
