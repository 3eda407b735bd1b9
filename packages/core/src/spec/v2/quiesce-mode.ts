/**
 * Whether a job asks for the guest to be quiesced before its snapshot:
 * - `required`: an application-consistent snapshot or none: a host whose snapshot could not be quiesced is not
 *   backed up (its tasks fail with a `QuiesceFailedError`, the snapshot is released);
 * - `preferred`: quiesce when the platform can; otherwise, or when quiescing fails, a crash-consistent snapshot is
 *   taken and the points record what was achieved;
 * - `none`: do not quiesce.
 */
export type QuiesceMode = 'required' | 'preferred' | 'none';
