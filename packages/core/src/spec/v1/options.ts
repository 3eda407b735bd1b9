/** The options object every I/O call of drkit accepts. */
export interface CallOptions {
  /** Aborts the call; it then rejects with `signal.reason`. */
  readonly signal?: AbortSignal;
}
