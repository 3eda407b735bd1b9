import { type DrkitErrorOptions, InvalidSettingsError, NotFoundError } from '@drkit/core';

const providerNotFound = Symbol.for('drkit.cli.ProviderNotFoundError');
const secretInConfig = Symbol.for('drkit.cli.SecretInConfigError');
const secretUnavailable = Symbol.for('drkit.cli.SecretUnavailableError');

function marked(error: unknown, marker: symbol): boolean {
  return typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[marker] === true;
}

/**
 * The provider package (or module file) a platform of the configuration names cannot be found. Code `NOT_FOUND`
 * (exit 3). The message says what to install.
 */
export class ProviderNotFoundError extends NotFoundError {
  /** The configuration field that names it, e.g. `platforms[1].provider.package`. */
  readonly field: string;
  /** The package name or module path as the configuration gives it. */
  readonly packageName: string;
  constructor(field: string, packageName: string, message: string, options?: DrkitErrorOptions) {
    super(`${field}: ${message}`, options);
    this.field = field;
    this.packageName = packageName;
    Object.defineProperty(this, providerNotFound, { value: true });
  }
  static override isInstance(error: unknown): error is ProviderNotFoundError {
    return NotFoundError.isInstance(error) && marked(error, providerNotFound);
  }
  override toJSON() {
    return { ...super.toJSON(), field: this.field, package: this.packageName };
  }
}

/**
 * A field whose name says it holds a secret (`password`, `keyring`, `secretAccessKey`, …) has a literal value in
 * the configuration file. Code `INVALID_SETTINGS` (exit 9). The message names the field, never the value.
 */
export class SecretInConfigError extends InvalidSettingsError {
  constructor(field: string) {
    super(
      field,
      'is a secret and must not be written in the configuration file: give it as { env: VARIABLE } or { file: PATH }',
    );
    Object.defineProperty(this, secretInConfig, { value: true });
  }
  static override isInstance(error: unknown): error is SecretInConfigError {
    return InvalidSettingsError.isInstance(error) && marked(error, secretInConfig);
  }
  override toJSON() {
    return { ...super.toJSON(), field: this.field };
  }
}

/**
 * A `{ env }` or `{ file }` reference of the configuration cannot be resolved: the variable is not set, the file
 * cannot be read. Code `INVALID_SETTINGS` (exit 9). The message names the field and the variable or file.
 */
export class SecretUnavailableError extends InvalidSettingsError {
  constructor(field: string, message: string, options?: DrkitErrorOptions) {
    super(field, message, options);
    Object.defineProperty(this, secretUnavailable, { value: true });
  }
  static override isInstance(error: unknown): error is SecretUnavailableError {
    return InvalidSettingsError.isInstance(error) && marked(error, secretUnavailable);
  }
  override toJSON() {
    return { ...super.toJSON(), field: this.field };
  }
}
