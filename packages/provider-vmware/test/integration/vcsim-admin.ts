// Changes to the simulator behind drkit's back, through a session of its own (the SOAP layer of src/, as a
// vSphere admin would use the API): terminate sessions, reconfigure VMs, upload disk content to a datastore.
import { createVimSoapClient } from '../../src/soap/vim-soap-client.js';
import { resolveTls } from '../../src/soap/vmware-tls.js';
import { child, children, type XmlElement } from '../../src/soap/xml-tree.js';
import { type ManagedObjectReference, refElement } from '../../src/soap/xml-writer.js';
import { objectSpec, retrieveObjects } from '../../src/vmware-property-collector.js';
import { createVmwareSession, readRef, type VmwareSession } from '../../src/vmware-session.js';
import type { RunningVcsim } from './vcsim-launcher.js';

export interface VcsimAdmin {
  readonly session: VmwareSession;
  call(method: string, body: string): Promise<XmlElement>;
  /** The keys of every session the server holds. */
  sessionKeys(): Promise<string[]>;
  /** This admin session's key. */
  ownKey(): Promise<string>;
  /** Terminates every session but the admin's own (as `TerminateSession` on a real vCenter). */
  terminateOtherSessions(): Promise<number>;
  /** ReconfigVM_Task with this spec content (inside `<spec>`), waited for. */
  reconfigure(vm: ManagedObjectReference, spec: string): Promise<void>;
  /** Reads one property of one object. */
  property(obj: ManagedObjectReference, path: string): Promise<XmlElement | undefined>;
  /** PUTs bytes to a datastore file (`/folder/<path>?dcPath=&dsName=`). */
  putFile(path: string, data: Uint8Array, datacenter?: string, datastore?: string): Promise<void>;
}

export function vcsimAdmin(vcsim: RunningVcsim): VcsimAdmin {
  const client = createVimSoapClient({
    sdkUrl: new URL(vcsim.url),
    tls: resolveTls({ ca: vcsim.certificate }),
    requestTimeoutMs: 30_000,
    soapAction: 'urn:vim25/6.7',
  });
  const session = createVmwareSession(client, { username: vcsim.username, password: vcsim.password });
  const call = (method: string, body: string) => session.call(method, body);

  async function property(obj: ManagedObjectReference, path: string): Promise<XmlElement | undefined> {
    const sc = await session.serviceContent();
    for await (const content of retrieveObjects(
      session,
      sc,
      objectSpec(obj, { type: obj.type, paths: [path] }),
      10,
    )) {
      return content.properties.get(path);
    }
    return undefined;
  }

  async function sessionKeys(): Promise<string[]> {
    const sc = await session.serviceContent();
    const list = await property(sc.sessionManager, 'sessionList');
    return list ? children(list, 'UserSession').map((s) => child(s, 'key')!.text.trim()) : [];
  }

  async function ownKey(): Promise<string> {
    const sc = await session.serviceContent();
    const current = await property(sc.sessionManager, 'currentSession');
    return child(current!, 'key')!.text.trim();
  }

  return {
    session,
    call,
    sessionKeys,
    ownKey,
    property,
    async terminateOtherSessions() {
      const sc = await session.serviceContent();
      const own = await ownKey();
      const others = (await sessionKeys()).filter((k) => k !== own);
      if (others.length > 0) {
        await call(
          'TerminateSession',
          refElement('_this', sc.sessionManager) + others.map((k) => `<sessionId>${k}</sessionId>`).join(''),
        );
      }
      return others.length;
    },
    async reconfigure(vm, spec) {
      const answer = await call('ReconfigVM_Task', `${refElement('_this', vm)}<spec>${spec}</spec>`);
      const task = readRef(child(answer, 'returnval'))!;
      // The simulator finishes tasks at once; check that this one succeeded.
      const state = await property(task, 'info.state');
      if (state?.text.trim() !== 'success') {
        const error = await property(task, 'info.error');
        throw new Error(
          `ReconfigVM_Task ended ${state?.text}: ${JSON.stringify(error?.children.map((c) => c.name))}`,
        );
      }
    },
    async putFile(path, data, datacenter = 'DC0', datastore = 'LocalDS_0') {
      const url = new URL(vcsim.url);
      url.pathname = `/folder/${path}`;
      url.search = new URLSearchParams({ dcPath: datacenter, dsName: datastore }).toString();
      const { request } = await import('node:https');
      await new Promise<void>((resolve, reject) => {
        const req = request(url, { method: 'PUT', ca: vcsim.certificate }, (res) => {
          res.resume();
          res.on('end', () =>
            res.statusCode === 200 || res.statusCode === 201
              ? resolve()
              : reject(new Error(`PUT ${url.pathname} answered ${res.statusCode}`)),
          );
        });
        req.on('error', reject);
        req.end(data);
      });
    },
  };
}
