import {
  AuthenticationError,
  type DrkitError,
  InvalidArgumentError,
  NotFoundError,
  PermissionError,
  SourceProtocolError,
  UnreachableError,
} from '@drkit/core';
import { attribute, child, childText, vimType, type XmlElement } from './soap/xml-tree.js';
import type { ManagedObjectReference } from './soap/xml-writer.js';

/** A vSphere fault as an answer carried it: its type (`NoPermission`) and the fields drkit uses. */
export interface VmwareFaultInfo {
  /** The fault's vim25 type name, e.g. `InvalidLogin`, `NoPermission`, `InvalidArgument`. */
  readonly type: string;
  /** The `faultstring` (the server's message, in its locale). */
  readonly message: string;
  /** `NoPermission` (and `NotAuthenticated`): the privilege the user lacks, e.g. `VirtualMachine.State.CreateSnapshot`. */
  readonly privilegeId?: string;
  /** `NoPermission`: the object the privilege was checked on. `ManagedObjectNotFound`: the missing object. */
  readonly object?: ManagedObjectReference;
  /** `InvalidArgument`: the argument refused, e.g. `changeId`. */
  readonly invalidProperty?: string;
  /** `FileFault` and its subtypes: the file. */
  readonly file?: string;
}

const faultMarker = Symbol.for('drkit.vmware.fault');

/** The vSphere fault behind a drkit error the provider threw, if there was one. */
export function vmwareFaultOf(error: unknown): VmwareFaultInfo | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  return (error as Record<symbol, VmwareFaultInfo | undefined>)[faultMarker];
}

function withFault<E extends DrkitError>(error: E, fault: VmwareFaultInfo): E {
  Object.defineProperty(error, faultMarker, { value: fault, enumerable: false });
  return error;
}

function readRef(element: XmlElement | undefined): ManagedObjectReference | undefined {
  if (!element) return undefined;
  const type = attribute(element, 'type');
  return type === undefined ? undefined : { type, value: element.text.trim() };
}

/**
 * Reads a fault object (a `MethodFault` subtype: the child of `<detail>`, or the `fault` of a
 * `LocalizedMethodFault`): its type from its `xsi:type` (resolved by namespace), else from the element's name
 * without its `Fault` suffix (`InvalidLoginFault`).
 * @internal
 */
export function readFaultObject(detail: XmlElement, message: string): VmwareFaultInfo {
  const type = vimType(detail) ?? detail.name.replace(/Fault$/, '');
  const info: {
    type: string;
    message: string;
    privilegeId?: string;
    object?: ManagedObjectReference;
    invalidProperty?: string;
    file?: string;
  } = { type, message };
  const privilegeId = childText(detail, 'privilegeId');
  if (privilegeId) info.privilegeId = privilegeId;
  const object = readRef(child(detail, 'object') ?? child(detail, 'obj'));
  if (object) info.object = object;
  const invalidProperty = childText(detail, 'invalidProperty');
  if (invalidProperty) info.invalidProperty = invalidProperty;
  const file = childText(detail, 'file');
  if (file) info.file = file;
  return info;
}

/** Reads the fault of a SOAP answer's `<soapenv:Fault>`. @internal */
export function readFault(fault: XmlElement): VmwareFaultInfo {
  const message = childText(fault, 'faultstring') ?? '';
  const detail = child(fault, 'detail')?.children[0];
  return detail ? readFaultObject(detail, message) : { type: 'SoapFault', message };
}

/** Fault types that mean the host or vCenter could not do the work now, not that the request was wrong. */
const UNREACHABLE_FAULTS = new Set([
  'HostCommunication',
  'HostNotConnected',
  'HostNotReachable',
  'NotSupportedHostInCluster',
  'RequestCanceled',
]);

/** Subtypes of NoPermission vSphere sends; NotAuthenticated is its own case. */
const PERMISSION_FAULTS = new Set(['NoPermission', 'NoPermissionOnAD', 'RestrictedVersion']);

function describeObject(ref: ManagedObjectReference | undefined): string {
  return ref ? ` on ${ref.type} ${ref.value}` : '';
}

/**
 * The drkit error of a vSphere fault: InvalidLogin → {@link @drkit/core!AuthenticationError}; NoPermission →
 * {@link @drkit/core!PermissionError} naming the privilege; NotAuthenticated → AuthenticationError (the session
 * layer re-logs in once before it lets one through); ManagedObjectNotFound → NotFoundError; InvalidArgument →
 * InvalidArgumentError naming the argument; host communication faults → UnreachableError; anything else →
 * SourceProtocolError with the fault's type and message. The fault stays readable with {@link vmwareFaultOf}.
 * @internal
 */
export function faultError(fault: VmwareFaultInfo, method: string): DrkitError {
  const said = fault.message ? `: ${fault.message}` : '';
  const where = `${method}${describeObject(fault.object)}`;
  if (fault.type === 'InvalidLogin') {
    return withFault(
      new AuthenticationError(
        'vSphere refused the user name or password (InvalidLogin): check `username` and `password`',
      ),
      fault,
    );
  }
  if (fault.type === 'NotAuthenticated') {
    return withFault(
      new AuthenticationError(
        `${where}: the session is not authenticated (NotAuthenticated), also after logging in again: check that ` +
          'the user may log in and that the session is not terminated at once',
        { retryable: true },
      ),
      fault,
    );
  }
  if (PERMISSION_FAULTS.has(fault.type)) {
    const privilege = fault.privilegeId ?? '(not named)';
    const error = new PermissionError(
      `${where}: the user lacks the vSphere privilege ${privilege} (${fault.type}): add it to the user's role ` +
        '(see the role definition in the README of @drkit/provider-vmware)',
    );
    Object.defineProperty(error, 'privilegeId', { value: fault.privilegeId, enumerable: true });
    return withFault(error, fault);
  }
  if (fault.type === 'ManagedObjectNotFound') {
    return withFault(new NotFoundError(`${where}: the object does not exist (any more)${said}`), fault);
  }
  if (fault.type === 'InvalidArgument') {
    return withFault(
      new InvalidArgumentError(
        `${method}: vSphere refused the argument ${fault.invalidProperty ?? '(not named)'} (InvalidArgument)${said}`,
      ),
      fault,
    );
  }
  if (UNREACHABLE_FAULTS.has(fault.type)) {
    return withFault(new UnreachableError(`${where}: ${fault.type}${said}`), fault);
  }
  return withFault(
    new SourceProtocolError(`${where} failed with the vSphere fault ${fault.type}${said}`),
    fault,
  );
}

/** The `privilegeId` of a PermissionError from this provider, if it named one. */
export function missingPrivilegeOf(error: unknown): string | undefined {
  return vmwareFaultOf(error)?.privilegeId;
}
