/** Escapes text for XML character data and attribute values. @internal */
export function escapeXml(value: string): string {
  return value.replace(/[&<>"']/g, (c) =>
    c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&apos;',
  );
}

/** A managed object reference as vSphere names one: its type and its id (`VirtualMachine`, `vm-42`). */
export interface ManagedObjectReference {
  readonly type: string;
  readonly value: string;
}

/** `<name>text</name>`, escaped. @internal */
export function textElement(name: string, value: string | number | boolean): string {
  return `<${name}>${escapeXml(String(value))}</${name}>`;
}

/** `<name type="Type">value</name>`: a managed object reference. @internal */
export function refElement(name: string, ref: ManagedObjectReference): string {
  return `<${name} type="${escapeXml(ref.type)}">${escapeXml(ref.value)}</${name}>`;
}

/**
 * `<name xsi:type="Type">content</name>`: a polymorphic data object. The request envelope binds `xsi` itself (see
 * `soapEnvelope`), so the prefix is ours to use here; answers are never matched on it.
 * @internal
 */
export function typedElement(name: string, type: string, content: string): string {
  return `<${name} xsi:type="${escapeXml(type)}">${content}</${name}>`;
}

/** The SOAP 1.1 envelope of one vim25 request, binding the prefixes request bodies use. @internal */
export function soapEnvelope(body: string): string {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ' +
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
    `<soapenv:Body>${body}</soapenv:Body></soapenv:Envelope>`
  );
}
