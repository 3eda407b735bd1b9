// Types of chunk-ops.mjs, the chunk worker's operations (internal to @drkit/core: not an export of the package).

/** Answers one message of the pool through `post`; errors of the operation are answered, never thrown. */
export declare function handleChunkMessage(
  message: { readonly id: number; readonly op: string } & Record<string, unknown>,
  post: (reply: Record<string, unknown>, transfer?: ArrayBuffer[]) => void,
): void;
