/**
 * An S3-compatible repository store for drkit (AWS S3, Ceph RGW, MinIO): {@link createS3Store} returns a core
 * `Store` with create-only writes (`If-None-Match: *`), `Content-MD5` on every write, ETag-checked reads, paged
 * listing, core typed errors and backoff through core's `retry()`.
 *
 * @packageDocumentation
 */
export { CreateOnlyConflictError, mapS3Error, redact, type S3ErrorContext } from './errors.js';
export {
  createS3Store,
  type S3Credentials,
  type S3RetryOptions,
  type S3Store,
  type S3StoreOptions,
} from './s3-store.js';
