import { EmulatorError, type HandlerContext, type HandlerResponse } from './emulator-context.js';
import { toXml } from './query-xml.js';

const STS_NAMESPACE = 'https://sts.amazonaws.com/doc/2011-06-15/';

/** An STS (AWS query) error answer. @internal */
export function stsErrorResponse(error: EmulatorError, requestId: string): HandlerResponse {
  return {
    status: error.status,
    headers: { 'content-type': 'text/xml' },
    body:
      `<ErrorResponse xmlns="${STS_NAMESPACE}"><Error>` +
      toXml({ Type: error.status >= 500 ? 'Receiver' : 'Sender', Code: error.code, Message: error.message }) +
      `</Error>${toXml({ RequestId: requestId })}</ErrorResponse>`,
  };
}

/** Answers STS GetCallerIdentity (which needs no permission). @internal */
export function handleSts(context: HandlerContext, action: string): HandlerResponse {
  if (action !== 'GetCallerIdentity') {
    throw new EmulatorError(
      400,
      'InvalidAction',
      `Could not find operation ${action} for version 2011-06-15`,
    );
  }
  const fault = context.takeFault('GetCallerIdentity');
  if (fault?.kind === 'internal-error')
    throw new EmulatorError(500, 'InternalFailure', 'Internal failure (injected).');
  if (fault?.kind === 'throttle') throw new EmulatorError(400, 'Throttling', 'Rate exceeded (injected).');
  const { accountId } = context.config;
  return {
    status: 200,
    headers: { 'content-type': 'text/xml' },
    body:
      `<GetCallerIdentityResponse xmlns="${STS_NAMESPACE}"><GetCallerIdentityResult>` +
      toXml({
        Arn: `arn:aws:iam::${accountId}:user/${context.user.userName}`,
        UserId: `AIDA${context.user.accessKeyId.slice(4).padEnd(17, 'X').slice(0, 17)}`,
        Account: accountId,
      }) +
      `</GetCallerIdentityResult><ResponseMetadata>${toXml({ RequestId: context.requestId })}</ResponseMetadata></GetCallerIdentityResponse>`,
  };
}
