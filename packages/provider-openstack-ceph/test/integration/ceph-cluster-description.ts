/** What `scripts/peers/ceph.sh start DIR` writes to DIR/cluster.json. */
export interface CephClusterDescription {
  readonly dir: string;
  readonly conf: string;
  readonly fsid: string;
  readonly cluster: string;
  readonly auth: 'cephx' | 'none';
  /** `v2:127.0.0.1:P2,v1:127.0.0.1:P1`. */
  readonly monitors: string;
  readonly monitorHostV1: string;
  readonly monitorHostV2: string;
  readonly monPortV1: number;
  readonly monPortV2: number;
  readonly pool: string;
  readonly adminUser: string;
  readonly adminKey: string;
  readonly adminKeyring: string;
  readonly backupUser: string;
  readonly backupKey: string;
}

/** What the global setup hands the tests. */
export type ProvidedCephCluster =
  | { readonly ok: true; readonly cluster: CephClusterDescription; readonly startupMs: number }
  | { readonly ok: false; readonly reason: string };

declare module 'vitest' {
  export interface ProvidedContext {
    cephCluster: ProvidedCephCluster;
  }
}
