/** One logging method: structured fields first, then a message (the order pino expects; `console` prints both). */
export type LogMethod = (fields: Readonly<Record<string, unknown>>, message: string) => void;

/**
 * Where drkit and its providers write what they do. A pino logger and `console` both satisfy it. Nothing is
 * logged unless the caller passes one. Fields never hold secrets (passwords, keyrings, access keys, tokens): a
 * provider that logs a request logs its method, host and path, not its headers or body.
 */
export interface Logger {
  debug: LogMethod;
  info: LogMethod;
  warn: LogMethod;
  error: LogMethod;
}
