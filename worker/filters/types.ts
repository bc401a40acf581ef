/**
 * The filter interface: what an operator implements to screen images their own way (a CLIP score,
 * a watermark check) without touching the pipeline. See worker/filters/registry.ts for how one
 * is registered (FILTER_MODULES).
 */
import type { FilterVerdict } from '../../shared/filters.js';
import type { RgbImage } from '../pipeline/types.js';

export type { FilterVerdict } from '../../shared/filters.js';

/** What a filter knows about the image it checks. */
export interface FilterContext {
  /** The prompt the image was made from (its variant, with prompt variations). */
  prompt: string;
  /** The seed of this try. */
  seed: number;
  /** The image's place in the job, from 0. */
  index: number;
  /** 1 for the first try, 2 for the first regeneration, … */
  attempt: number;
  /** Aborted when the job is canceled or runs past its deadline. */
  signal?: AbortSignal | undefined;
}

export interface ImageFilter {
  /** The name requests use in `filters` (lowercase letters, digits, `_`, `-`; at most 32). */
  readonly name: string;
  /** `passed: false` screens the image out: it is regenerated, or blanked once the tries run out. */
  check(image: RgbImage, context: FilterContext): FilterVerdict | Promise<FilterVerdict>;
  /** Frees what the filter holds when the worker stops. */
  close?(): void | Promise<void>;
}

/** What a FILTER_MODULES module gets when its default export is a factory. */
export interface FilterModuleContext {
  /** The model directory the worker serves. */
  modelDir: string;
  logger: { info(fields: object, message: string): void; warn(fields: object, message: string): void };
}

/** A FILTER_MODULES module's default export: a filter, a list of them, or a factory of either. */
export type FilterModuleExport =
  | ImageFilter
  | ImageFilter[]
  | ((context: FilterModuleContext) => ImageFilter | ImageFilter[] | Promise<ImageFilter | ImageFilter[]>);
