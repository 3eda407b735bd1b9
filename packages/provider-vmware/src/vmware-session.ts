import type { CallOptions } from '@drkit/core';
import type { VimSoapClient } from './soap/vim-soap-client.js';
import { attribute, child, childText, type XmlElement } from './soap/xml-tree.js';
import { escapeXml, type ManagedObjectReference, refElement } from './soap/xml-writer.js';
import { vmwareFaultOf } from './vmware-errors.js';

/** The parts of vSphere's ServiceContent drkit uses. Object ids differ between vCenter and ESXi: always read here. */
export interface ServiceContent {
  readonly rootFolder: ManagedObjectReference;
  readonly propertyCollector: ManagedObjectReference;
  readonly viewManager: ManagedObjectReference;
  readonly sessionManager: ManagedObjectReference;
  readonly searchIndex: ManagedObjectReference | undefined;
  readonly about: {
    /** `VirtualCenter` for a vCenter, `HostAgent` for an ESXi host. */
    readonly apiType: string;
    readonly apiVersion: string;
    readonly fullName: string;
    readonly instanceUuid: string | undefined;
  };
}

/** A logged-in vim25 session: Login with the session cookie, once again on NotAuthenticated, Logout on close. @internal */
export interface VmwareSession {
  serviceContent(options?: CallOptions): Promise<ServiceContent>;
  /**
   * Invokes a method that needs a session and reads its answer with `read`. Logs in first when there is none;
   * when the session expired (a NotAuthenticated fault, thrown by the server or by `read`: vcsim reports it per
   * property) it logs in again once and repeats the call.
   */
  call<T = XmlElement>(
    method: string,
    body: string,
    options?: CallOptions,
    read?: (answer: XmlElement) => T,
  ): Promise<T>;
  /** Logs in now (verify()). */
  login(options?: CallOptions): Promise<void>;
  /** Logs out when logged in; a session already gone is not an error. */
  logout(options?: CallOptions): Promise<void>;
  /**
   * The session cookie's value, logging in first when there is none (for requests outside SOAP: datastore files).
   */
  cookie(options?: CallOptions): Promise<string | undefined>;
  /**
   * Logs in again because a request outside SOAP was refused with the cookie `expired` (HTTP 401); when another
   * call already logged in again since, only waits for that login.
   */
  renew(expired: string | undefined, options?: CallOptions): Promise<void>;
}

/** Reads a ManagedObjectReference element (`<x type="T">id</x>`). @internal */
export function readRef(element: XmlElement | undefined): ManagedObjectReference | undefined {
  if (!element) return undefined;
  const type = attribute(element, 'type');
  return type === undefined ? undefined : { type, value: element.text.trim() };
}

function requiredRef(element: XmlElement, name: string): ManagedObjectReference {
  const ref = readRef(child(element, name));
  if (!ref) throw new Error(`the ServiceContent has no ${name}`);
  return ref;
}

/** @internal */
export function readServiceContent(returnval: XmlElement): ServiceContent {
  const about = child(returnval, 'about');
  return {
    rootFolder: requiredRef(returnval, 'rootFolder'),
    propertyCollector: requiredRef(returnval, 'propertyCollector'),
    viewManager: requiredRef(returnval, 'viewManager'),
    sessionManager: requiredRef(returnval, 'sessionManager'),
    searchIndex: readRef(child(returnval, 'searchIndex')),
    about: {
      apiType: (about && childText(about, 'apiType')) ?? '',
      apiVersion: (about && childText(about, 'apiVersion')) ?? '',
      fullName: (about && childText(about, 'fullName')) ?? '',
      instanceUuid: about ? childText(about, 'instanceUuid') : undefined,
    },
  };
}

/** @internal */
export function createVmwareSession(
  client: VimSoapClient,
  credentials: { readonly username: string; readonly password: string },
): VmwareSession {
  let content: Promise<ServiceContent> | undefined;
  let loggedIn = false;
  let loggingIn: Promise<void> | undefined;
  /** Counts logins, so that calls failing at once on one expired session log in again only once. */
  let generation = 0;

  function serviceContent(options?: CallOptions): Promise<ServiceContent> {
    content ??= client
      .invoke(
        'RetrieveServiceContent',
        refElement('_this', { type: 'ServiceInstance', value: 'ServiceInstance' }),
        options,
      )
      .then((answer) => {
        const returnval = child(answer, 'returnval');
        if (!returnval) throw new Error('RetrieveServiceContent answered no returnval');
        return readServiceContent(returnval);
      });
    return content.catch((error: unknown) => {
      content = undefined;
      throw error;
    });
  }

  async function doLogin(options?: CallOptions): Promise<void> {
    const sc = await serviceContent(options);
    client.sessionCookie = undefined;
    // The password goes in the body only: the SOAP client never logs or reports a body.
    await client.invoke(
      'Login',
      refElement('_this', sc.sessionManager) +
        `<userName>${escapeXml(credentials.username)}</userName><password>${escapeXml(credentials.password)}</password>`,
      options,
    );
    generation += 1;
    loggedIn = true;
    options?.logger?.info(
      { user: credentials.username, apiType: sc.about.apiType },
      'vSphere session opened',
    );
  }

  async function login(options?: CallOptions): Promise<void> {
    if (loggedIn) return;
    loggingIn ??= doLogin(options).finally(() => {
      loggingIn = undefined;
    });
    await loggingIn;
  }

  async function call<T = XmlElement>(
    method: string,
    body: string,
    options?: CallOptions,
    read: (answer: XmlElement) => T = (answer) => answer as T,
  ): Promise<T> {
    await login(options);
    const started = generation;
    try {
      return read(await client.invoke(method, body, options));
    } catch (error) {
      if (vmwareFaultOf(error)?.type !== 'NotAuthenticated') throw error;
      options?.logger?.info({ method }, 'vSphere session expired: logging in again');
      if (started === generation) {
        loggedIn = false;
        client.sessionCookie = undefined;
      }
      await login(options);
      // A second NotAuthenticated is the caller's: an AuthenticationError.
      return read(await client.invoke(method, body, options));
    }
  }

  async function logout(options?: CallOptions): Promise<void> {
    if (!loggedIn) return;
    loggedIn = false;
    try {
      const sc = await serviceContent(options);
      await client.invoke('Logout', refElement('_this', sc.sessionManager), options);
    } catch (error) {
      if (vmwareFaultOf(error)?.type !== 'NotAuthenticated') throw error;
    } finally {
      client.sessionCookie = undefined;
    }
  }

  async function cookie(options?: CallOptions): Promise<string | undefined> {
    await login(options);
    return client.sessionCookie;
  }

  async function renew(expired: string | undefined, options?: CallOptions): Promise<void> {
    if (loggingIn === undefined && client.sessionCookie === expired) {
      loggedIn = false;
      client.sessionCookie = undefined;
    }
    await login(options);
  }

  return { serviceContent, call, login, logout, cookie, renew };
}
