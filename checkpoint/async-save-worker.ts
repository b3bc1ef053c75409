/** Runs on AsyncSaver's worker thread: serialise, hash and publish one rank's files of a save. */
import { parentPort, workerData } from 'node:worker_threads';
import type { SaveThreadMessage } from './async-save';
import { writeCheckpointFiles, type SaveData } from './checkpoint';
import { errorRecord } from './errors';
import { forwardLogging } from './log';
import { configureS3 } from './s3-store';

const post = (msg: SaveThreadMessage) => parentPort!.postMessage(msg);

// This thread has no logger settings of its own: the main thread writes its lines (async-save.ts).
forwardLogging((record) => post({ log: record }));
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
