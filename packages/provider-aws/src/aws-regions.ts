import { DescribeInstancesCommand, DescribeRegionsCommand, EC2Client } from '@aws-sdk/client-ec2';
import { type CallOptions, InvalidSettingsError } from '@drkit/core';
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

/** Options of {@link discoverAwsRegion}. */
export interface DiscoverAwsRegionOptions extends CallOptions {
  readonly credentials: AwsCredentials | AwsCredentialsProvider;
  /** The region DescribeRegions is asked in. Default `us-east-1`. */
  readonly startRegion?: string;
  /**
   * The EC2 endpoint every region's requests go to (an emulator). Unset on AWS: each region's own endpoint. A
   * VPC endpoint belongs to one region: with one, name the region rather than discover it.
   */
  readonly endpoint?: string;
}

/** What {@link discoverAwsRegion} found. */
export interface DiscoveredAwsRegion {
  /** The one enabled region that has instances. */
  readonly region: string;
  /** Every enabled region asked, in DescribeRegions' order. */
  readonly regionsAsked: readonly string[];
}

/**
 * The console's region "auto-detection": the regions the credentials can use (DescribeRegions), then in each one
 * DescribeInstances (at most 5, not terminated) to find where the account's instances are. The answer is the one
 * region that has instances.
 *
 * @throws {@link @drkit/core!InvalidSettingsError} for `region` when no enabled region has an instance, or when
 * several do (naming them: a platform is one region; configure one per region); the errors of
 * {@link listAwsRegions} (ec2:DescribeRegions) and of DescribeInstances (ec2:DescribeInstances).
 * @example
 * ```ts
 * const { region } = await discoverAwsRegion({ credentials: { accessKeyId, secretAccessKey } });
 * ```
 */
export async function discoverAwsRegion(options: DiscoverAwsRegionOptions): Promise<DiscoveredAwsRegion> {
  const { signal } = options;
  const regions = await listAwsRegions({
    credentials: options.credentials,
    region: options.startRegion ?? 'us-east-1',
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    ...(signal ? { signal } : {}),
  });
  const asked = regions.filter((r) => r.optInStatus !== 'not-opted-in').map((r) => r.name);
  const withInstances: string[] = [];
  for (const region of asked) {
    signal?.throwIfAborted();
    const client = new EC2Client({
      region,
      credentials: options.credentials,
      useFipsEndpoint: false,
      useDualstackEndpoint: false,
      ignoreConfiguredEndpointUrls: true,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    });
    try {
      const answer = await client.send(
        new DescribeInstancesCommand({
          MaxResults: 5,
          Filters: [
            {
              Name: 'instance-state-name',
              Values: ['pending', 'running', 'stopping', 'stopped', 'shutting-down'],
            },
          ],
        }),
        { abortSignal: signal },
      );
      if ((answer.Reservations ?? []).some((r) => (r.Instances ?? []).length > 0)) withInstances.push(region);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw toDrkitError(error, 'ec2:DescribeInstances', `DescribeInstances in ${region}`);
    } finally {
      client.destroy();
    }
  }
  if (withInstances.length === 1) return { region: withInstances[0]!, regionsAsked: asked };
  throw new InvalidSettingsError(
    'region',
    withInstances.length === 0
      ? `no region has an EC2 instance (asked ${asked.join(', ') || 'none'}): set the region`
      : `instances are in ${withInstances.join(', ')}: set the region (one platform per region)`,
  );
}
