/**
 * With payload encryption on, failures are encrypted too: their messages and stack traces (which name
 * files, steps and directories) move into an encoded payload that the codec encrypts, so a failed run's
 * history shows only the failure's type. Loaded by path (the workflow sandbox gets it in its bundle), so
 * it imports nothing but the SDK's common package.
 */
import { DefaultFailureConverter } from '@temporalio/common';

export const failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
