/**
 * An error as log fields: its name, code and message, never its other properties (an HTTP error's request, which
 * may carry credentials, stays out of the log).
 */
export function describeError(error: unknown): { name: string; code?: string; message: string } {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { name: error.name, ...(typeof code === 'string' ? { code } : {}), message: error.message };
  }
  return { name: 'non-error', message: String(error) };
}
