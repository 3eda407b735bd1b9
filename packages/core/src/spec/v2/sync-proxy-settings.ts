/** Settings of one Sync Proxy, as the product page defines them. */
export interface SyncProxySettings {
  /**
   * The product page's "HTTP Communication Timeout" of the proxy, in seconds (1–86400, default 600): how long one
   * request to a source may go unanswered. The proxy hands it to every read session it opens
   * ({@link @drkit/core!OpenChangedBlocksOptions.requestTimeoutSeconds}) and passes it as the `deadline` of each call it makes
   * to a session (`open`, `read`, `readRange`, `commit`, `abandon`); `commit`, `abandon` and `close` are also
   * given up past it (a reader that ignores its deadline cannot hang the task). A stream, and a read, are also
   * bounded by the stall watchdog (`stallTimeoutSeconds`).
   */
  readonly httpTimeoutSeconds: number;
  /** How many disks the proxy reads (mounts) at once. Default 50, at most 150. */
  readonly maxMountedDisks: number;
}
