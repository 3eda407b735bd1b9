import {
  AuthenticationError,
  InvalidArgumentError,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  UnreachableError,
} from '@drkit/core';
import { describe, expect, it } from 'vitest';
import { child, parseXml } from './soap/xml-tree.js';
import { faultError, missingPrivilegeOf, readFault, vmwareFaultOf } from './vmware-errors.js';

function fault(detail: string, message = 'msg', prefix = 'xsi'): ReturnType<typeof readFault> {
  const envelope = parseXml(
    `<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:${prefix}="http://www.w3.org/2001/XMLSchema-instance">` +
      `<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>${message}</faultstring>` +
      `<detail>${detail.replaceAll('xsi:', `${prefix}:`)}</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`,
  );
  return readFault(child(child(envelope, 'Body')!, 'Fault')!);
}

describe('SOAP faults', () => {
  it('InvalidLogin → AuthenticationError, not retryable, saying what to check', () => {
    const error = faultError(
      fault(
        '<InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault>',
        'Login failure',
      ),
      'Login',
    );
    expect(AuthenticationError.isInstance(error)).toBe(true);
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/username.*password/);
  });

  it('NoPermission → PermissionError naming the privilege and the object', () => {
    const info = fault(
      '<NoPermissionFault xmlns="urn:vim25" xsi:type="NoPermission"><object type="VirtualMachine">vm-57</object>' +
        '<privilegeId>VirtualMachine.State.CreateSnapshot</privilegeId></NoPermissionFault>',
      'Permission to perform this operation was denied.',
      'XMLSchema-instance',
    );
    expect(info).toMatchObject({
      type: 'NoPermission',
      privilegeId: 'VirtualMachine.State.CreateSnapshot',
      object: { type: 'VirtualMachine', value: 'vm-57' },
    });
    const error = faultError(info, 'CreateSnapshot_Task');
    expect(PermissionError.isInstance(error)).toBe(true);
    expect(error.message).toContain('VirtualMachine.State.CreateSnapshot');
    expect(error.message).toContain('vm-57');
    expect(missingPrivilegeOf(error)).toBe('VirtualMachine.State.CreateSnapshot');
    expect((error as PermissionError & { privilegeId?: string }).privilegeId).toBe(
      'VirtualMachine.State.CreateSnapshot',
    );
  });

  it('names the fault from its element when it has no xsi:type', () => {
    expect(
      fault(
        '<InvalidArgumentFault xmlns="urn:vim25"><invalidProperty>changeId</invalidProperty></InvalidArgumentFault>',
      ),
    ).toMatchObject({
      type: 'InvalidArgument',
      invalidProperty: 'changeId',
    });
  });

  it('maps the other kinds and keeps the fault readable', () => {
    const cases: [string, (e: unknown) => boolean][] = [
      [
        '<F xmlns="urn:vim25" xsi:type="NotAuthenticated"><privilegeId>System.View</privilegeId></F>',
        AuthenticationError.isInstance,
      ],
      [
        '<F xmlns="urn:vim25" xsi:type="ManagedObjectNotFound"><obj type="VirtualMachine">vm-9</obj></F>',
        NotFoundError.isInstance,
      ],
      [
        '<F xmlns="urn:vim25" xsi:type="InvalidArgument"><invalidProperty>changeId</invalidProperty></F>',
        InvalidArgumentError.isInstance,
      ],
      ['<F xmlns="urn:vim25" xsi:type="HostCommunication"></F>', UnreachableError.isInstance],
      ['<F xmlns="urn:vim25" xsi:type="TaskInProgress"></F>', SourceProtocolError.isInstance],
    ];
    for (const [detail, is] of cases) {
      const error = faultError(fault(detail), 'M');
      expect(is(error)).toBe(true);
      expect(vmwareFaultOf(error)?.type).toBe(/xsi:type="(\w+)"/.exec(detail)![1]);
    }
  });
});
