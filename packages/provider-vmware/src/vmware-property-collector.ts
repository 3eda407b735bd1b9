import type { CallOptions } from '@drkit/core';
import { SourceProtocolError } from '@drkit/core';
import { child, children, childText, type XmlElement } from './soap/xml-tree.js';
import {
  escapeXml,
  type ManagedObjectReference,
  refElement,
  textElement,
  typedElement,
} from './soap/xml-writer.js';
import { faultError, readFaultObject } from './vmware-errors.js';
import { readRef, type ServiceContent, type VmwareSession } from './vmware-session.js';

/** One object a PropertyCollector returned: its reference and its properties by path. @internal */
export interface ObjectContent {
  readonly obj: ManagedObjectReference;
  /** `val` elements by property path (`config.hardware.device`). */
  readonly properties: ReadonlyMap<string, XmlElement>;
}

/** Which properties of which object type to read. @internal */
export interface PropertySelection {
  readonly type: string;
  readonly paths: readonly string[];
}

function propSet(selections: readonly PropertySelection[]): string {
  return selections
    .map(
      (s) =>
        `<propSet>${textElement('type', s.type)}${s.paths.map((p) => textElement('pathSet', p)).join('')}</propSet>`,
    )
    .join('');
}

/** The filter spec that reads `selections` of the objects a container view lists. @internal */
export function containerViewSpec(
  view: ManagedObjectReference,
  selections: readonly PropertySelection[],
): string {
  return (
    `<specSet>${propSet(selections)}<objectSet>${refElement('obj', view)}<skip>true</skip>` +
    typedElement(
      'selectSet',
      'TraversalSpec',
      '<name>traverseView</name><type>ContainerView</type><path>view</path><skip>false</skip>',
    ) +
    '</objectSet></specSet>'
  );
}

/** The filter spec that reads `selection` of one object. @internal */
export function objectSpec(obj: ManagedObjectReference, selection: PropertySelection): string {
  return `<specSet>${propSet([selection])}<objectSet>${refElement('obj', obj)}<skip>false</skip></objectSet></specSet>`;
}

function readObjectContent(element: XmlElement, method: string): ObjectContent {
  const obj = readRef(child(element, 'obj'));
  if (!obj) throw new SourceProtocolError(`${method} answered an object without its reference`);
  const properties = new Map<string, XmlElement>();
  for (const prop of children(element, 'propSet')) {
    const name = childText(prop, 'name');
    const val = child(prop, 'val');
    if (name !== undefined && val !== undefined) properties.set(name, val);
  }
  for (const missing of children(element, 'missingSet')) {
    // A property the user may not read (NoPermission) or could not be read: an error naming it, never a silent gap.
    const fault = child(missing, 'fault');
    const detail = fault && child(fault, 'fault');
    const path = childText(missing, 'path') ?? '(a property)';
    const info = detail
      ? readFaultObject(detail, childText(fault, 'localizedMessage') || `cannot read ${path}`)
      : { type: 'MissingProperty', message: `cannot read ${path}` };
    throw faultError({ ...info, object: info.object ?? obj }, `${method} of ${path}`);
  }
  return { obj, properties };
}

function readResult(
  answer: XmlElement,
  method: string,
): { token: string | undefined; objects: ObjectContent[] } {
  const returnval = child(answer, 'returnval');
  if (!returnval) return { token: undefined, objects: [] }; // no object matched
  return {
    token: childText(returnval, 'token') || undefined,
    objects: children(returnval, 'objects').map((o) => readObjectContent(o, method)),
  };
}

/**
 * Reads objects with `RetrievePropertiesEx`, at most `maxObjects` per answer, and the rest page by page with
 * `ContinueRetrievePropertiesEx` while the server hands a token. A consumer that stops early cancels the rest
 * (`CancelRetrievePropertiesEx`).
 * @internal
 */
export async function* retrieveObjects(
  session: VmwareSession,
  sc: ServiceContent,
  specSet: string,
  maxObjects: number,
  options?: CallOptions,
): AsyncGenerator<ObjectContent> {
  const collector = refElement('_this', sc.propertyCollector);
  let result = await session.call(
    'RetrievePropertiesEx',
    `${collector}${specSet}<options>${textElement('maxObjects', maxObjects)}</options>`,
    options,
    (answer) => readResult(answer, 'RetrievePropertiesEx'),
  );
  let done = false;
  try {
    for (;;) {
      for (const object of result.objects) yield object;
      if (result.token === undefined) break;
      const token = result.token;
      result = { token: undefined, objects: [] };
      result = await session.call(
        'ContinueRetrievePropertiesEx',
        `${collector}${textElement('token', token)}`,
        options,
        (answer) => readResult(answer, 'ContinueRetrievePropertiesEx'),
      );
    }
    done = true;
  } finally {
    if (!done && result.token !== undefined) {
      await session
        .call('CancelRetrievePropertiesEx', `${collector}<token>${escapeXml(result.token)}</token>`, options)
        .catch(() => undefined);
    }
  }
}

/**
 * Runs `body` with a container view of `types` under the root folder (recursive), and destroys the view after,
 * also when `body` throws or its consumer stops early.
 * @internal
 */
export async function* withContainerView<T>(
  session: VmwareSession,
  sc: ServiceContent,
  types: readonly string[],
  body: (view: ManagedObjectReference) => AsyncIterable<T>,
  options?: CallOptions,
): AsyncGenerator<T> {
  const answer = await session.call(
    'CreateContainerView',
    refElement('_this', sc.viewManager) +
      refElement('container', sc.rootFolder) +
      types.map((t) => textElement('type', t)).join('') +
      '<recursive>true</recursive>',
    options,
  );
  const view = readRef(child(answer, 'returnval'));
  if (!view) throw new SourceProtocolError('CreateContainerView answered no view');
  try {
    yield* body(view);
  } finally {
    await session.call('DestroyView', refElement('_this', view), options).catch(() => undefined);
  }
}
