import type { CephClusterDescription } from '../ceph-cluster-description.js';

/** A user of the seeded cloud, as `scripts/peers/openstack-peer.py seed` writes it to facts.json. */
export interface OpenStackPeerUser {
  readonly username: string;
  readonly password: string;
  readonly projectName: string;
  readonly projectId: string;
  readonly userDomainId: string;
  readonly projectDomainId: string;
}

/** A seeded volume. */
export interface OpenStackPeerVolume {
  readonly id: string;
  readonly name: string;
  readonly sizeGiB: number;
  /** `ceph` (Cinder's RBD driver when the peer has Ceph) or `local` (the fake driver: no RBD image). */
  readonly volumeType: string;
  readonly bootable: boolean;
  /** The device Cinder records for the attachment (`/dev/vda`, `/dev/sda` with Nova's fake driver). */
  readonly device: string;
  /** `os-vol-host-attr:host`, `drkit-cinder@ceph#ceph`. */
  readonly host: string;
  /** Whether the volume is a real `volume-<id>` image in the Ceph pool. */
  readonly inCeph: boolean;
}

/** A seeded server, booted from its first volume. */
export interface OpenStackPeerServer {
  readonly id: string;
  readonly name: string;
  readonly projectId: string;
  readonly flavor: string;
  readonly volumes: readonly OpenStackPeerVolume[];
}

/** DIR/facts.json of `scripts/peers/openstack.sh start DIR CEPHDIR`. */
export interface OpenStackPeerFacts {
  readonly authUrl: string;
  readonly regionName: string;
  readonly ports: Readonly<Record<string, number>>;
  readonly admin: OpenStackPeerUser;
  readonly member: OpenStackPeerUser;
  /** `rbd` when the `ceph` volume type is Cinder's RBD driver, `fake` otherwise. */
  readonly cinderDriver: 'rbd' | 'fake';
  readonly cephPool: string;
  readonly servers: readonly OpenStackPeerServer[];
  readonly seedSeconds: number;
}

/** What the OpenStack global setup hands the tests. */
export type ProvidedOpenStackPeer =
  | {
      readonly ok: true;
      readonly facts: OpenStackPeerFacts;
      readonly ceph: CephClusterDescription;
      /** `step seconds` lines of DIR/timings.txt, and the Ceph start. */
      readonly timings: Readonly<Record<string, number>>;
    }
  | { readonly ok: false; readonly reason: string };

declare module 'vitest' {
  export interface ProvidedContext {
    openstackPeer: ProvidedOpenStackPeer;
  }
}
