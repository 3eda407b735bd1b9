// The chunk worker's operations, apart from the thread they run in: chunk-worker.mjs wires them to its parentPort,
// and tests wire them into fixture workers that inject faults (a worker that exits, throws or hangs).
// Plain JavaScript so that it runs unchanged from the sources (tests) and from the published package.
import { createHash, createHmac } from 'node:crypto';
import { compressBound, compressInto, decompress, decompressInto } from './zstd-codec.mjs';

function withOut(transfer, out) {
  return out && ownsBuffer(out) ? [...transfer, out.buffer] : transfer;
}

function isAllZero(bytes) {
  let start = 0;
  if (bytes.byteOffset % 4 === 0) {
    const words = bytes.byteLength >>> 2;
    const view = new Uint32Array(bytes.buffer, bytes.byteOffset, words);
    for (let i = 0; i < words; i++) if (view[i] !== 0) return false;
    start = words << 2;
  }
  for (let i = start; i < bytes.byteLength; i++) if (bytes[i] !== 0) return false;
  return true;
}

function ownsBuffer(view) {
  return view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
}

// A chunk's id: SHA-256 of its plain bytes, or HMAC-SHA-256 under the repository's id key (an encrypted
// repository; `idKey` is 32 bytes sent with every call).
function chunkId(bytes, idKey) {
  return (idKey ? createHmac('sha256', idKey) : createHash('sha256')).update(bytes).digest();
}

/**
 * Answers one message of the pool (`{ id, op, ... }`) through `post(reply, transfer)`; errors of the operation
 * are answered as `{ id, error }`, never thrown.
 */
export function handleChunkMessage(message, post) {
  const { id, op } = message;
  try {
    if (op === 'encode') {
      // { data, parentId?: Uint8Array(32), out?: Uint8Array, headroom: number, idKey?: Uint8Array(32),
      //   probe?: boolean, knownId?: Uint8Array(32) }
      // Buffers go back to the main thread in every answer (so it can reuse them); none is left here as
      // garbage, where a worker that allocates little on its own heap would keep it long.
      // `probe`: stop after the hash when the chunk is neither zero nor unchanged (answer `probed`), so the caller
      // can ask the store before paying for compression. `knownId`: the id of these bytes from such a probe, so
      // neither the zero check nor the hash is done again.
      const data = message.data;
      const headroom = message.headroom ?? 0;
      const transfer = ownsBuffer(data) ? [data.buffer] : [];
      let hash;
      if (message.knownId) {
        hash = Buffer.from(message.knownId);
      } else {
        if (isAllZero(data)) {
          post({ id, zero: true, returned: data, out: message.out }, withOut(transfer, message.out));
          return;
        }
        hash = chunkId(data, message.idKey);
        if (message.parentId && Buffer.compare(hash, Buffer.from(message.parentId)) === 0) {
          post(
            { id, hash, unchanged: true, returned: data, out: message.out },
            withOut(transfer, message.out),
          );
          return;
        }
        if (message.probe) {
          post({ id, hash, probed: true, returned: data, out: message.out }, withOut(transfer, message.out));
          return;
        }
      }
      const bound = headroom + compressBound(data.byteLength);
      const out = message.out && message.out.byteLength >= bound ? message.out : new Uint8Array(bound);
      const written = compressInto(out.subarray(headroom), data);
      let codec = 1;
      let payloadLength = written;
      if (written >= data.byteLength) {
        // Does not shrink: store it raw, framed in the same buffer.
        out.set(data, headroom);
        codec = 0;
        payloadLength = data.byteLength;
      }
      post(
        { id, hash, codec, out, payloadOffset: headroom, payloadLength, returned: data },
        withOut(transfer, out),
      );
    } else if (op === 'decode') {
      // { payload, codec, plainLength, idKey?, out? }. The payload's buffer is this thread's own (transferred or
      // cloned): it goes back with the answer, for the reason given above. `out` (a buffer of its own, at least
      // plainLength bytes) receives a zstd payload's plain bytes; unused (a raw payload) it goes back as `spare`.
      const payload = Buffer.from(
        message.payload.buffer,
        message.payload.byteOffset,
        message.payload.byteLength,
      );
      const given = message.out && message.out.byteLength >= message.plainLength ? message.out : undefined;
      let plain = payload;
      if (message.codec === 1) {
        plain = given
          ? decompressInto(given.subarray(0, message.plainLength), payload)
          : decompress(payload, message.plainLength);
      }
      if (plain.byteLength !== message.plainLength) {
        post({
          id,
          error: `decoded ${plain.byteLength} bytes, expected ${message.plainLength}`,
        });
        return;
      }
      const hash = chunkId(plain, message.idKey);
      const out = new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength);
      const transfer = [message.payload.buffer];
      if (message.codec === 1 && (given || ownsBuffer(out))) transfer.push(out.buffer);
      const spare = message.codec === 1 && given ? undefined : message.out;
      post({ id, hash, plain: out, returned: message.payload, spare }, withOut(transfer, spare));
    } else if (op === 'hash') {
      const data = new Uint8Array(message.data.buffer, message.data.byteOffset, message.data.byteLength);
      post({ id, hash: chunkId(data, message.idKey) });
    } else {
      post({ id, error: `unknown op ${op}` });
    }
  } catch (error) {
    post({ id, error: String(error?.message ?? error) });
  }
}
