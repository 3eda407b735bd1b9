import { SourceProtocolError } from '@drkit/core';
import { SaxesParser } from 'saxes';

/** The XML Schema instance namespace: where `type` (the `xsi:type` of polymorphic values) lives. */
export const XSI_NAMESPACE = 'http://www.w3.org/2001/XMLSchema-instance';
/** The XML Schema namespace: the primitive types (`xsd:string`, `xsd:long`) of `xsi:type` values. */
export const XSD_NAMESPACE = 'http://www.w3.org/2001/XMLSchema';
/** The SOAP 1.1 envelope namespace. */
export const SOAP_ENVELOPE_NAMESPACE = 'http://schemas.xmlsoap.org/soap/envelope/';
/** The namespace of every vSphere (vim25) type and element. */
export const VIM25_NAMESPACE = 'urn:vim25';

/** A qualified name with its prefix resolved: namespace URI and local name. */
export interface QualifiedName {
  readonly namespace: string;
  readonly name: string;
}

/**
 * One element of a parsed document, with every name resolved through the namespace declarations in scope, so that
 * `xsi:type`, `XMLSchema-instance:type` (vcsim) or any other prefix bound to the same URI read the same.
 * @internal
 */
export interface XmlElement {
  /** Namespace URI of the element ('' when none). */
  readonly namespace: string;
  /** Local name. */
  readonly name: string;
  /** Attributes by `{namespace}local` (`local` alone for attributes without a namespace, the usual case). */
  readonly attributes: ReadonlyMap<string, string>;
  /** The element's `type` attribute of the XML Schema instance namespace, resolved; undefined when absent. */
  readonly xsiType: QualifiedName | undefined;
  readonly children: readonly XmlElement[];
  /** The element's own character data (not its children's), untrimmed. */
  readonly text: string;
}

interface MutableElement {
  namespace: string;
  name: string;
  attributes: Map<string, string>;
  xsiType: QualifiedName | undefined;
  children: MutableElement[];
  text: string;
}

function attributeKey(namespace: string, local: string): string {
  return namespace === '' ? local : `{${namespace}}${local}`;
}

/**
 * Parses a whole XML document, namespace-aware (saxes, strict XML 1.0 with namespaces), into a tree.
 *
 * @throws {@link @drkit/core!SourceProtocolError} when the text is not well-formed XML or uses an undeclared prefix.
 * @internal
 */
export function parseXml(text: string, what = 'the answer'): XmlElement {
  const parser = new SaxesParser({ xmlns: true });
  const stack: MutableElement[] = [];
  let root: MutableElement | undefined;
  let failure: Error | undefined;
  parser.on('error', (error) => {
    failure ??= error;
  });
  parser.on('opentag', (tag) => {
    const attributes = new Map<string, string>();
    let xsiType: QualifiedName | undefined;
    for (const attribute of Object.values(tag.attributes)) {
      // Namespace declarations are scope, not data.
      if (attribute.prefix === 'xmlns' || attribute.name === 'xmlns') continue;
      attributes.set(attributeKey(attribute.uri, attribute.local), attribute.value);
      if (attribute.uri === XSI_NAMESPACE && attribute.local === 'type') {
        const value = attribute.value.trim();
        const colon = value.indexOf(':');
        const prefix = colon < 0 ? '' : value.slice(0, colon);
        const namespace = parser.resolve(prefix);
        if (namespace === undefined && prefix !== '') {
          failure ??= new Error(`the type ${JSON.stringify(value)} uses the undeclared prefix ${prefix}`);
        }
        xsiType = { namespace: namespace ?? '', name: colon < 0 ? value : value.slice(colon + 1) };
      }
    }
    const element: MutableElement = {
      namespace: tag.uri,
      name: tag.local,
      attributes,
      xsiType,
      children: [],
      text: '',
    };
    const parent = stack[stack.length - 1];
    if (parent) parent.children.push(element);
    else root = element;
    stack.push(element);
  });
  parser.on('text', (data) => {
    const current = stack[stack.length - 1];
    if (current) current.text += data;
  });
  parser.on('cdata', (data) => {
    const current = stack[stack.length - 1];
    if (current) current.text += data;
  });
  parser.on('closetag', () => {
    stack.pop();
  });
  try {
    parser.write(text).close();
  } catch (error) {
    failure ??= error instanceof Error ? error : new Error(String(error));
  }
  if (failure || !root) {
    throw new SourceProtocolError(
      `${what} is not well-formed XML (${failure ? failure.message : 'no root element'}; ${text.length} characters, ` +
        `starting ${JSON.stringify(text.slice(0, 60))})`,
    );
  }
  return root;
}

/** The first child with this local name (any namespace), if any. @internal */
export function child(element: XmlElement, name: string): XmlElement | undefined {
  return element.children.find((c) => c.name === name);
}

/** Every child with this local name (any namespace). @internal */
export function children(element: XmlElement, name: string): XmlElement[] {
  return element.children.filter((c) => c.name === name);
}

/** The trimmed text of the first child of that name, if there is one. @internal */
export function childText(element: XmlElement, name: string): string | undefined {
  const found = child(element, name);
  return found === undefined ? undefined : found.text.trim();
}

/** An attribute without namespace (`type` of a ManagedObjectReference). @internal */
export function attribute(element: XmlElement, name: string): string | undefined {
  return element.attributes.get(name);
}

/** The element's `xsi:type` local name when it is a vim25 type (`VirtualDisk`), else undefined. @internal */
export function vimType(element: XmlElement): string | undefined {
  const type = element.xsiType;
  return type && (type.namespace === VIM25_NAMESPACE || type.namespace === '') ? type.name : undefined;
}
