/** Settings of one Sync Proxy, as the product page defines them. */
export interface SyncProxySettings {
  /**
   * The product page's "HTTP Communication Timeout" of the proxy, in seconds (1–86400, default 600): how long one
   * request to a source may go unanswered. The proxy hands it to every read session it opens
   * ({@link OpenChangedBlocksOptions.requestTimeoutSeconds}) and bounds each call it makes to a reader with it
   * (`open`, `read`, `readRange`, `commit`, `abandon`, as a `deadline`). A stream is bounded by the stall
   * watchdog (`stallTimeoutSeconds`) instead.
   */
  readonly httpTimeoutSeconds: number;
  /** How many disks the proxy reads (mounts) at once. Default 50, at most 150. */
  readonly maxMountedDisks: number;
}
