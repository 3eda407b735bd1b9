/** Result of {@link @drkit/core!Platform.verify}, as a console shows it ("status Normal, N hosts"). */
export type PlatformStatus =
  | { readonly status: 'normal'; readonly hostCount: number; readonly checkedAt: string }
  | {
      readonly status: 'abnormal';
      /** What is wrong and what to do next. */
      readonly reason: string;
      /** Stable code of the underlying error, when there is one. */
      readonly code?: string;
      readonly checkedAt: string;
    };
