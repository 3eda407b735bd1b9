import { SourceProtocolError } from '@drkit/core';
import { describe, expect, it } from 'vitest';
import { readVirtualDevices } from '../vmware-devices.js';
import { child, parseXml, vimType, XSD_NAMESPACE } from './xml-tree.js';

// Recorded from vcsim (govmomi 0.24.2 simulator), RetrievePropertiesEx of config.hardware.device, shortened: the
// property value rebinds the XML Schema instance namespace to the prefix `XMLSchema-instance`.
const VCSIM_DEVICES =
  '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ' +
  'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>' +
  '<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-57</obj>' +
  '<propSet><name>config.hardware.device</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" ' +
  'XMLSchema-instance:type="ArrayOfVirtualDevice"><VirtualDevice XMLSchema-instance:type="ParaVirtualSCSIController">' +
  '<key>202</key><busNumber>0</busNumber><sharedBus>noSharing</sharedBus></VirtualDevice>' +
  '<VirtualDevice XMLSchema-instance:type="VirtualDisk"><key>255511522</key><deviceInfo XMLSchema-instance:type="Description">' +
  '<label>disk-202-0</label><summary>4,096 KB</summary></deviceInfo><backing XMLSchema-instance:type="VirtualDiskFlatVer2BackingInfo">' +
  '<fileName>[LocalDS_0] DC0_H0_VM0/disk1.vmdk</fileName><datastore type="Datastore">/tmp/x@folder-5</datastore>' +
  '<diskMode>persistent</diskMode><thinProvisioned>true</thinProvisioned>' +
  '<changeId>09 ba 3a e6 08 4c fe 0f-df 57 ff 61 3b fa b7 4e/2</changeId></backing>' +
  '<controllerKey>202</controllerKey><unitNumber>0</unitNumber><capacityInKB>4096</capacityInKB></VirtualDevice></val>' +
  '</propSet><propSet><name>name</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" ' +
  'XMLSchema-instance:type="xsd:string">DC0_H0_VM0</val></propSet></objects></returnval>' +
  '</RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>';

function vals(xml: string) {
  const objects = child(
    child(child(child(parseXml(xml), 'Body')!, 'RetrievePropertiesExResponse')!, 'returnval')!,
    'objects',
  )!;
  return objects.children.filter((c) => c.name === 'propSet').map((p) => child(p, 'val')!);
}

describe('parseXml', () => {
  it("resolves vcsim's XMLSchema-instance:type like xsi:type, and the xsd: prefix of primitive types", () => {
    const [devices, name] = vals(VCSIM_DEVICES);
    expect(vimType(devices!)).toBe('ArrayOfVirtualDevice');
    expect(name!.xsiType).toEqual({ namespace: XSD_NAMESPACE, name: 'string' });
    expect(name!.text).toBe('DC0_H0_VM0');
  });

  it('reads the same document with any other prefix bound to the same namespace', () => {
    const renamed = VCSIM_DEVICES.replaceAll('XMLSchema-instance:', 'q1:').replaceAll(
      'xmlns:XMLSchema-instance',
      'xmlns:q1',
    );
    const withXsi = VCSIM_DEVICES.replaceAll('XMLSchema-instance:', 'xsi:').replaceAll(
      ' xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance"',
      '',
    );
    const expected = readVirtualDevices(vals(VCSIM_DEVICES)[0]!);
    expect(readVirtualDevices(vals(renamed)[0]!)).toEqual(expected);
    expect(readVirtualDevices(vals(withXsi)[0]!)).toEqual(expected);
  });

  it('does not take a `type` attribute of another namespace for xsi:type', () => {
    const xml = '<a xmlns:x="urn:other"><b x:type="VirtualDisk"/></a>';
    expect(parseXml(xml).children[0]!.xsiType).toBeUndefined();
  });

  it('reads the polymorphic devices: subtypes, capacity from capacityInKB × 1024, the change id', () => {
    const devices = readVirtualDevices(vals(VCSIM_DEVICES)[0]!);
    expect(devices.map((d) => d.type)).toEqual(['ParaVirtualSCSIController', 'VirtualDisk']);
    expect(devices[0]!.sharedBus).toBe('noSharing');
    expect(devices[1]).toMatchObject({
      key: 255511522,
      label: 'disk-202-0',
      controllerKey: 202,
      unitNumber: 0,
      capacityBytes: 4096 * 1024,
      backing: {
        type: 'VirtualDiskFlatVer2BackingInfo',
        fileName: '[LocalDS_0] DC0_H0_VM0/disk1.vmdk',
        diskMode: 'persistent',
        changeId: '09 ba 3a e6 08 4c fe 0f-df 57 ff 61 3b fa b7 4e/2',
        thinProvisioned: true,
      },
    });
  });

  it('prefers capacityInBytes when a server sends it', () => {
    const xml = VCSIM_DEVICES.replace(
      '<capacityInKB>4096</capacityInKB>',
      '<capacityInKB>4096</capacityInKB><capacityInBytes>4194305</capacityInBytes>',
    );
    expect(readVirtualDevices(vals(xml)[0]!)[1]!.capacityBytes).toBe(4194305);
  });

  it('throws SourceProtocolError for malformed XML and for an undeclared prefix in a type', () => {
    expect(() => parseXml('<a><b></a>')).toThrow(SourceProtocolError);
    expect(() =>
      parseXml('<a xmlns:i="http://www.w3.org/2001/XMLSchema-instance" i:type="zz:Thing"/>'),
    ).toThrow(/undeclared prefix zz/);
  });
});
