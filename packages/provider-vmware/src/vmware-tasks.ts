import { type CallOptions, SourceProtocolError } from '@drkit/core';
import { child, children, childText, type XmlElement } from './soap/xml-tree.js';
import { type ManagedObjectReference, refElement, textElement } from './soap/xml-writer.js';
import { faultError, readFaultObject } from './vmware-errors.js';
import { readRef, type ServiceContent, type VmwareSession } from './vmware-session.js';

/**
 * Waits for a vSphere task with a PropertyCollector of its own (CreatePropertyCollector, a filter on the task's
 * `info.state`, `info.result` and `info.error`, then WaitForUpdatesEx until the state is final): the server tells
 * when the task changes, nothing is polled. Resolves with `info.result`'s `val` element (undefined for tasks without
 * a result); rejects with the drkit error of the task's fault. The collector is destroyed in every case.
 * @internal
 */
export async function waitForTask(
  session: VmwareSession,
  sc: ServiceContent,
  task: ManagedObjectReference,
  what: string,
  options: CallOptions & { readonly maxWaitSeconds: number },
): Promise<XmlElement | undefined> {
  const collector = readRef(
    child(
      await session.call('CreatePropertyCollector', refElement('_this', sc.propertyCollector), options),
      'returnval',
    ),
  );
  if (!collector) throw new SourceProtocolError('CreatePropertyCollector answered no collector');
  try {
    await session.call(
      'CreateFilter',
      refElement('_this', collector) +
        `<spec><propSet><type>Task</type><pathSet>info.state</pathSet><pathSet>info.result</pathSet>` +
        `<pathSet>info.error</pathSet></propSet><objectSet>${refElement('obj', task)}<skip>false</skip></objectSet>` +
        '</spec><partialUpdates>false</partialUpdates>',
      options,
    );
    let version = '';
    let state: string | undefined;
    let result: XmlElement | undefined;
    let error: XmlElement | undefined;
    for (;;) {
      options.signal?.throwIfAborted();
      const answer = await session.call(
        'WaitForUpdatesEx',
        refElement('_this', collector) +
          textElement('version', version) +
          `<options>${textElement('maxWaitSeconds', options.maxWaitSeconds)}</options>`,
        options,
      );
      const updates = child(answer, 'returnval');
      if (!updates) continue; // maxWaitSeconds passed without a change
      version = childText(updates, 'version') ?? version;
      for (const filter of children(updates, 'filterSet')) {
        for (const object of children(filter, 'objectSet')) {
          for (const change of children(object, 'changeSet')) {
            const name = childText(change, 'name');
            const val = child(change, 'val');
            if (name === 'info.state') state = val?.text.trim();
            else if (name === 'info.result') result = val;
            else if (name === 'info.error') error = val;
          }
        }
      }
      if (state === 'success') return result;
      if (state === 'error') {
        const fault = error && child(error, 'fault');
        const message = (error && childText(error, 'localizedMessage')) || `${what} failed`;
        throw faultError(fault ? readFaultObject(fault, message) : { type: 'TaskFailed', message }, what);
      }
    }
  } finally {
    await session
      .call('DestroyPropertyCollector', refElement('_this', collector), options)
      .catch(() => undefined);
  }
}
