/**
 * Frees the memory of a buffer nobody will read again now, rather than at some later garbage collection, when the
 * view spans an `ArrayBuffer` of its own (never a slice of a shared pool, whose other views would go empty with
 * it: such a view is left alone, as is a buffer that cannot be detached). The view reads as empty afterwards.
 *
 * Why: V8 frees an unreachable `ArrayBuffer`'s memory only at a garbage collection, and a thread that allocates
 * few JavaScript objects while it moves megabytes through buffers (the main thread of a backup that seals every
 * chunk) triggers one rarely: until then up to about 64 MiB of dead buffers count in the process's RSS.
 * Measured here: sealing 1,500 chunks of 1 MiB peaked at 130 MiB of RSS keeping the cipher's output for the
 * collector and at 62 MiB freeing it this way.
 *
 * @internal
 */
export function freeNow(view: Uint8Array): void {
  const { buffer } = view;
  if (!(buffer instanceof ArrayBuffer) || buffer.detached || buffer.resizable) return;
  if (view.byteOffset !== 0 || view.byteLength !== buffer.byteLength || buffer.byteLength === 0) return;
  try {
    buffer.transfer(0);
  } catch {
    // Not detachable (an embedder's buffer): the collector frees it.
  }
}
