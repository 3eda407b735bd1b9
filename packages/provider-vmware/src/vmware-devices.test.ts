import { describe, expect, it } from 'vitest';
import { classifyDisk, type VirtualDeviceInfo } from './vmware-devices.js';

function disk(
  backing: Partial<NonNullable<VirtualDeviceInfo['backing']>> | undefined,
  controllerKey = 1000,
): VirtualDeviceInfo {
  return {
    type: 'VirtualDisk',
    key: 2000,
    label: 'Hard disk 1',
    controllerKey,
    unitNumber: 0,
    capacityBytes: 1024,
    sharedBus: undefined,
    backing:
      backing === undefined
        ? undefined
        : {
            type: 'VirtualDiskFlatVer2BackingInfo',
            fileName: '[ds] vm/vm.vmdk',
            datastore: undefined,
            diskMode: 'persistent',
            changeId: undefined,
            sharing: 'sharingNone',
            compatibilityMode: undefined,
            thinProvisioned: false,
            uuid: undefined,
            ...backing,
          },
  };
}

const controller = (sharedBus: string): Map<number, VirtualDeviceInfo> =>
  new Map([[1000, { ...disk(undefined), type: 'ParaVirtualSCSIController', key: 1000, sharedBus }]]);

describe('classifyDisk', () => {
  it('protects an ordinary VMDK', () => {
    expect(classifyDisk(disk({}), controller('noSharing'))).toBeUndefined();
  });
  it('skips RDMs (either mode), independent, multi-writer and bus-shared disks, and unknown backings', () => {
    const reason = (d: VirtualDeviceInfo, c = controller('noSharing')) => classifyDisk(d, c)?.reason;
    expect(
      reason(disk({ type: 'VirtualDiskRawDiskMappingVer1BackingInfo', compatibilityMode: 'physicalMode' })),
    ).toBe('raw-device-mapping');
    expect(
      reason(disk({ type: 'VirtualDiskRawDiskMappingVer1BackingInfo', compatibilityMode: 'virtualMode' })),
    ).toBe('raw-device-mapping');
    expect(reason(disk({ diskMode: 'independent_nonpersistent' }))).toBe('independent-disk');
    expect(reason(disk({ sharing: 'sharingMultiWriter' }))).toBe('vmware-shared-disk');
    expect(reason(disk({}), controller('physicalSharing'))).toBe('vmware-shared-disk');
    expect(reason(disk({ type: 'VirtualDiskLocalPMemBackingInfo' }))).toBe('unsupported-disk');
    expect(reason(disk(undefined))).toBe('unsupported-disk');
  });
});
