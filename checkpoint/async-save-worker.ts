/** Runs on AsyncSaver's worker thread: serialise, hash and publish one rank's files of a save. */
import { parentPort, workerData } from 'node:worker_threads';
import { writeCheckpointFiles, type SaveData } from './checkpoint';
import { configureS3 } from './s3-store';

if (workerData?.storeConfig) configureS3(workerData.storeConfig as Parameters<typeof configureS3>[0]);

parentPort!.on(
  'message',
  (msg: { id: number; dir: string; step: number; data: SaveData; options: Record<string, unknown> }) => {
    writeCheckpointFiles(msg.dir, msg.step, msg.data, msg.options).then(
      (files) => parentPort!.postMessage({ id: msg.id, files }),
      (err: Error) =>
        parentPort!.postMessage({ id: msg.id, error: { name: err.name, message: err.message } }),
    );
  },
);
