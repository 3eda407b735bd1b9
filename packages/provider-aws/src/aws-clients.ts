import { EBSClient } from '@aws-sdk/client-ebs';
import { EC2Client } from '@aws-sdk/client-ec2';
import { STSClient } from '@aws-sdk/client-sts';
import type { ResolvedAwsOptions } from './aws-options.js';

/** The three SDK clients of one platform. @internal */
export interface AwsClients {
  readonly ec2: EC2Client;
  readonly ebs: EBSClient;
  readonly sts: STSClient;
  destroy(): void;
}

/**
 * Creates the clients with everything explicit, so nothing is read from the environment or the shared config
 * files: credentials, region, endpoints, retries, FIPS and dual-stack. The EBS client makes one attempt (drkit
 * retries reads itself, and the engine retries throttled reads: retries never nest) and keeps enough sockets for
 * the reads in flight.
 *
 * @internal
 */
export function createAwsClients(options: ResolvedAwsOptions): AwsClients {
  const common = {
    region: options.region,
    credentials: options.credentials,
    useFipsEndpoint: false,
    useDualstackEndpoint: false,
    defaultsMode: 'standard' as const,
    ignoreConfiguredEndpointUrls: true,
  };
  const controlPlane = { ...common, maxAttempts: options.controlPlaneMaxAttempts, retryMode: 'standard' };
  const sockets = options.maxConcurrentReads + 8;
  const ec2 = new EC2Client({
    ...controlPlane,
    ...(options.endpoints.ec2 ? { endpoint: options.endpoints.ec2 } : {}),
  });
  const sts = new STSClient({
    ...controlPlane,
    ...(options.endpoints.sts ? { endpoint: options.endpoints.sts } : {}),
  });
  const ebs = new EBSClient({
    ...common,
    ...(options.endpoints.ebs ? { endpoint: options.endpoints.ebs } : {}),
    maxAttempts: 1,
    requestHandler: {
      httpAgent: { keepAlive: true, maxSockets: sockets },
      httpsAgent: { keepAlive: true, maxSockets: sockets },
      connectionTimeout: 10_000,
    },
  });
  return {
    ec2,
    ebs,
    sts,
    destroy() {
      ec2.destroy();
      ebs.destroy();
      sts.destroy();
    },
  };
}
