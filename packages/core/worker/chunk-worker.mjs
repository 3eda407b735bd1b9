// Worker thread of @drkit/core: hashes, compresses, decompresses chunks off the main thread.
// Plain JavaScript so that it runs unchanged from the sources (tests) and from the published package.
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { Compressor, Decompressor } from 'zstd-napi';

const compressor = new Compressor();
// `new Compressor({ compressionLevel })` would silently use level 3: set the level explicitly.
compressor.setParameters({ compressionLevel: 1 });
const decompressor = new Decompressor();

function isAllZero(bytes) {
  const words = bytes.byteLength >>> 3;
  const view = new BigUint64Array(bytes.buffer, bytes.byteOffset, words);
  for (let i = 0; i < words; i++) if (view[i] !== 0n) return false;
  for (let i = words << 3; i < bytes.byteLength; i++) if (bytes[i] !== 0) return false;
  return true;
}

function ownsBuffer(view) {
  return view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
}

function sha256(bytes) {
  return createHash('sha256').update(bytes).digest();
}

parentPort.on('message', (message) => {
  const { id, op } = message;
  try {
    if (op === 'encode') {
      // { data, parentId?: Uint8Array(32), compress: boolean }
      const data = new Uint8Array(message.data.buffer, message.data.byteOffset, message.data.byteLength);
      // Buffers go back to the main thread in every answer: a worker allocates little on its own heap, so
      // garbage buffers left here would wait long for a collection and swell the process's memory.
      const back = ownsBuffer(data) ? [data.buffer] : [];
      if (isAllZero(data)) {
        parentPort.postMessage({ id, zero: true, returned: data }, back);
        return;
      }
      const hash = sha256(data);
      if (message.parentId && Buffer.compare(hash, Buffer.from(message.parentId)) === 0) {
        parentPort.postMessage({ id, hash, unchanged: true, returned: data }, back);
        return;
      }
      const compressed = compressor.compress(data);
      if (compressed.byteLength < data.byteLength) {
        const out = new Uint8Array(compressed.buffer, compressed.byteOffset, compressed.byteLength);
        parentPort.postMessage({ id, hash, codec: 1, payload: out, returned: data }, [out.buffer, ...back]);
      } else {
        parentPort.postMessage({ id, hash, codec: 0, payload: data }, back);
      }
    } else if (op === 'decode') {
      // { payload, codec, plainLength }. The payload's buffer is this thread's own (transferred or cloned):
      // it goes back with the answer, for the reason given above.
      const payload = Buffer.from(
        message.payload.buffer,
        message.payload.byteOffset,
        message.payload.byteLength,
      );
      const plain = message.codec === 1 ? decompressor.decompress(payload) : payload;
      if (plain.byteLength !== message.plainLength) {
        parentPort.postMessage({
          id,
          error: `decoded ${plain.byteLength} bytes, expected ${message.plainLength}`,
        });
        return;
      }
      const hash = sha256(plain);
      const out = new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength);
      const transfer = [message.payload.buffer];
      if (message.codec === 1 && ownsBuffer(out)) transfer.push(out.buffer);
      parentPort.postMessage({ id, hash, plain: out, returned: message.payload }, transfer);
    } else if (op === 'hash') {
      const data = new Uint8Array(message.data.buffer, message.data.byteOffset, message.data.byteLength);
      parentPort.postMessage({ id, hash: sha256(data) });
    } else {
      parentPort.postMessage({ id, error: `unknown op ${op}` });
    }
  } catch (error) {
    parentPort.postMessage({ id, error: String(error?.message ?? error) });
  }
});
