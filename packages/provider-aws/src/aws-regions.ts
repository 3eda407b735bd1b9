import { DescribeRegionsCommand, EC2Client } from '@aws-sdk/client-ec2';
import type { CallOptions } from '@drkit/core';
import { toDrkitError } from './aws-errors.js';
import type { AwsCredentials, AwsCredentialsProvider } from './aws-options.js';

/** Options of {@link listAwsRegions}. */
export interface ListAwsRegionsOptions extends CallOptions {
  readonly credentials: AwsCredentials | AwsCredentialsProvider;
  /** The region asked (any enabled one answers for all). Default `us-east-1`. */
  readonly region?: string;
  /** The EC2 endpoint, when not the region's default. */
  readonly endpoint?: string;
  /** Also the regions the account has not opted in to. Default false. */
  readonly all?: boolean;
}

/** One region as {@link listAwsRegions} reports it. */
export interface AwsRegion {
  readonly name: string;
  /** `opt-in-not-required`, `opted-in` or `not-opted-in`. */
  readonly optInStatus: string;
}

/**
 * The regions the credentials can use (EC2 DescribeRegions): the console's region "auto-detection" offers them.
 *
 * @throws {@link @drkit/core!AuthenticationError}, {@link @drkit/core!PermissionError} (ec2:DescribeRegions),
 * {@link @drkit/core!UnreachableError}.
 * @example
 * ```ts
 * const regions = await listAwsRegions({ credentials: { accessKeyId, secretAccessKey } });
 * console.log(regions.map((r) => r.name)); // ['us-east-1', 'eu-west-1', ...]
 * ```
 */
export async function listAwsRegions(options: ListAwsRegionsOptions): Promise<AwsRegion[]> {
  const { signal } = options;
  signal?.throwIfAborted();
  const client = new EC2Client({
    region: options.region ?? 'us-east-1',
    credentials: options.credentials,
    useFipsEndpoint: false,
    useDualstackEndpoint: false,
    ignoreConfiguredEndpointUrls: true,
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
  });
  try {
    const answer = await client.send(new DescribeRegionsCommand({ AllRegions: options.all === true }), {
      abortSignal: signal,
    });
    return (answer.Regions ?? [])
      .filter((r) => r.RegionName)
      .map((r) => ({ name: r.RegionName!, optInStatus: r.OptInStatus ?? 'opt-in-not-required' }));
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw toDrkitError(error, 'ec2:DescribeRegions', 'DescribeRegions');
  } finally {
    client.destroy();
  }
}
