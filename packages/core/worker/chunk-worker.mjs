// Worker thread of @drkit/core: hashes, compresses, decompresses chunks off the main thread.
// Plain JavaScript so that it runs unchanged from the sources (tests) and from the published package.
import { parentPort } from 'node:worker_threads';
import { handleChunkMessage } from './chunk-ops.mjs';
import { codecWarning } from './zstd-codec.mjs';

// The pool emits it once per process, however many workers say so (a warning emitted here would reach only this
// thread's stderr, once per worker, and no 'warning' listener of the application).
if (codecWarning) parentPort.postMessage({ warning: codecWarning });

parentPort.on('message', (message) =>
  handleChunkMessage(message, (reply, transfer) => parentPort.postMessage(reply, transfer)),
);
