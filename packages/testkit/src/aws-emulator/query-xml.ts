/** A value {@link toXml} writes: scalars, dates, nested objects, and lists (written as `<item>` elements). */
export type XmlValue = string | number | boolean | Date | undefined | null | XmlObject | readonly XmlValue[];
export interface XmlObject {
  readonly [key: string]: XmlValue;
}

export function escapeXml(text: string): string {
  return text.replace(
    /[<>&'"]/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!,
  );
}

function scalar(value: XmlValue): string {
  if (value instanceof Date) return value.toISOString();
  return escapeXml(String(value));
}

/** Writes an object as the XML elements of an EC2 or STS query answer. */
export function toXml(value: XmlObject): string {
  let out = '';
  for (const [key, child] of Object.entries(value)) {
    if (child === undefined || child === null) continue;
    out += `<${key}>${content(child)}</${key}>`;
  }
  return out;
}

function content(value: XmlValue): string {
  if (Array.isArray(value)) return value.map((item) => `<item>${content(item)}</item>`).join('');
  if (typeof value === 'object' && value !== null && !(value instanceof Date))
    return toXml(value as XmlObject);
  return scalar(value);
}

/** Values of a query list parameter: `Name.1`, `Name.2`, ... */
export function listParam(params: URLSearchParams, name: string): string[] {
  const values: string[] = [];
  for (let i = 1; ; i++) {
    const value = params.get(`${name}.${i}`);
    if (value === null) return values;
    values.push(value);
  }
}

/** The `Filter.N.Name` / `Filter.N.Value.M` parameters. */
export function filterParams(params: URLSearchParams): { name: string; values: string[] }[] {
  const filters: { name: string; values: string[] }[] = [];
  for (let i = 1; ; i++) {
    const name = params.get(`Filter.${i}.Name`);
    if (name === null) return filters;
    filters.push({ name, values: listParam(params, `Filter.${i}.Value`) });
  }
}
