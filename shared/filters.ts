/**
 * Image filters as the API and the job view know them. Workers run them (worker/filters/); the
 * API checks names against these and against what the model's workers published.
 */

/** Filters every worker has: `nsfw` needs the export's safety checker. */
export const BUILTIN_FILTERS = ['nsfw', 'grayscale'] as const;

/** What a filter name looks like (operators name their own). */
export const FILTER_NAME_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;

/** Most filters one request may name. */
export const MAX_FILTERS = 16;

/** One filter's verdict on one image: `passed: false` screens the image out. */
export interface FilterVerdict {
  passed: boolean;
  /** The measure the filter decided on, when it has one (grayscale: the 99th-percentile chroma). */
  score?: number;
  /** The limit `score` was held against. */
  threshold?: number;
  /** A short reason, for people. */
  detail?: string;
}
