// Loaded into the drkit CLI by crash.test.ts with `node --import`, never otherwise. Once the backup has put
// DRKIT_CRASH_GATE_AFTER chunk blobs into place under DRKIT_CRASH_GATE_CHUNKS (the local folder store hard-links
// or renames each finished temporary file to its key), it writes one line to stderr and stops the whole process
// with SIGSTOP. The test waits for that line and kills the stopped process: a crash at a known point of the
// backup, before it can commit, however fast or slow the machine is.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { sep } from 'node:path';
import { isMainThread } from 'node:worker_threads';

const folder = process.env.DRKIT_CRASH_GATE_CHUNKS;
const after = Number(process.env.DRKIT_CRASH_GATE_AFTER);

if (isMainThread && folder && after > 0) {
  let placed = 0;
  for (const name of ['link', 'rename']) {
    const original = fs.promises[name];
    fs.promises[name] = async function gated(from, to, ...rest) {
      const result = await original.call(this, from, to, ...rest);
      if (String(to).startsWith(folder + sep) && ++placed === after) {
        fs.writeSync(2, `drkit-crash-gate: stopped after ${placed} chunks\n`);
        process.kill(process.pid, 'SIGSTOP');
      }
      return result;
    };
  }
  // `import { link } from 'node:fs/promises'` in the CLI's modules sees the wrapped functions.
  syncBuiltinESMExports();
}
