// Child process of zstd-codec.test.ts: loads the chunk worker's codec in a fresh process, so that the environment
// it is started with (DRKIT_ZSTD_CODEC=zlib) takes effect, and reports as JSON on stdout: the codec, the warnings
// the process got, the frames it made of the inputs and the plain bytes of the frames it was given.
// stdin: { inputs: base64[], frames: { frame: base64, plainLength: number }[] }.
import { text } from 'node:stream/consumers';

const warnings = [];
process.on('warning', (warning) =>
  warnings.push({ name: warning.name, code: warning.code, message: warning.message }),
);

const request = JSON.parse(await text(process.stdin));
const codec = await import('../../worker/zstd-codec.mjs');
const frames = request.inputs.map((input) => {
  const data = Buffer.from(input, 'base64');
  const out = new Uint8Array(codec.compressBound(data.byteLength));
  const written = codec.compressInto(out, data);
  return Buffer.from(out.subarray(0, written)).toString('base64');
});
const plains = request.frames.map(({ frame, plainLength }) =>
  codec.decompress(Buffer.from(frame, 'base64'), plainLength).toString('base64'),
);
// Warnings are emitted on the next tick.
await new Promise((resolve) => setImmediate(resolve));
process.stdout.write(JSON.stringify({ codecName: codec.codecName, warnings, frames, plains }));
