/** State of a disk task, as progress events report it. */
export type DiskTaskState = 'waiting' | 'snapshotting' | 'reading' | 'committing' | 'done' | 'failed';
