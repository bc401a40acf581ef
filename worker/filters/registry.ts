/**
 * The filters a worker can run, and which of them run when a request names none (the model's
 * defaults). Built-in: `nsfw` (when the export has a safety checker; on by default then) and
 * `grayscale` (off by default).
 *
 * Registering your own: write a module whose default export is an `ImageFilter` (a `name` and a
 * `check(image, context)` returning a verdict), a list of them, or a function that makes them
 * from `{ modelDir, logger }`, and list its path in FILTER_MODULES (comma-separated, relative to
 * the worker's working directory). Each worker imports it at start; a module that fails to load,
 * or a name that is taken or malformed, stops the worker with the reason. Requests then name the
 * filter in `filters`; the API accepts the name once a worker has published it with the model.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { FILTER_NAME_PATTERN, type FilterVerdict } from '../../shared/filters.js';
import type { Pipeline } from '../pipeline/types.js';
import { DEFAULT_GRAYSCALE_MAX_CHROMA, grayscaleFilter } from './grayscale-filter.js';
import { nsfwFilter } from './nsfw-filter.js';
import type { FilterModuleContext, FilterModuleExport, ImageFilter } from './types.js';

/** A request named a filter this worker does not have. Bad input: the job fails at once. */
export class UnknownFilterError extends Error {
  override readonly name = 'UnknownFilterError';
  readonly code = 'invalid_request';
  readonly field = 'filters';
}

/** A filter (module) that cannot be registered: a configuration error, found at start. */
export class FilterRegistrationError extends Error {
  override readonly name = 'FilterRegistrationError';
}

export class FilterSet {
  private readonly filters = new Map<string, ImageFilter>();

  /** `defaults`: what runs when a request names no filters (the model's choice). */
  constructor(private defaultNames: readonly string[] = []) {}

  register(filter: ImageFilter): this {
    if (!filter || typeof filter !== 'object' || typeof filter.check !== 'function') {
      throw new FilterRegistrationError('a filter must be an object with a name and a check(image, context) function');
    }
    if (typeof filter.name !== 'string' || !FILTER_NAME_PATTERN.test(filter.name)) {
      throw new FilterRegistrationError(`filter name ${JSON.stringify(filter.name)} must match ${FILTER_NAME_PATTERN}`);
    }
    if (this.filters.has(filter.name)) throw new FilterRegistrationError(`a filter named "${filter.name}" is already registered`);
    this.filters.set(filter.name, filter);
    return this;
  }

  /** Makes `names` (registered ones) the filters that run when a request names none. */
  setDefaults(names: readonly string[]): this {
    const missing = names.find((name) => !this.filters.has(name));
    if (missing) throw new FilterRegistrationError(`default filter "${missing}" is not registered`);
    this.defaultNames = [...names];
    return this;
  }

  get names(): string[] {
    return [...this.filters.keys()];
  }

  get defaults(): string[] {
    return [...this.defaultNames];
  }

  /** The filters a job runs: the ones it names (in that order), else the defaults. */
  resolve(requested: readonly string[] | undefined): ImageFilter[] {
    const names = requested ?? this.defaultNames;
    return names.map((name) => {
      const filter = this.filters.get(name);
      if (!filter) {
        const why = name === 'nsfw' ? ' (this model has no safety checker)' : '';
        throw new UnknownFilterError(`filters: this worker has no filter "${name}"${why}; it has: ${this.names.join(', ') || 'none'}`);
      }
      return filter;
    });
  }

  /** What the worker publishes with its model, for the API to check requests against. */
  describe(): { available: string[]; defaults: string[] } {
    return { available: this.names, defaults: this.defaults };
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.filters.values()].map(async (filter) => filter.close?.()));
  }
}

/**
 * The built-in filters for a loaded model and its defaults: `nsfw` on when the export has a
 * safety checker (as diffusers runs one whenever the export has it). Derived from the model, so
 * each model served gets its own.
 */
export function createFilterSet(pipeline: Pick<Pipeline, 'safetyChecker'>, options: { grayscaleMaxChroma?: number } = {}): FilterSet {
  const set = new FilterSet();
  if (pipeline.safetyChecker) set.register(nsfwFilter(pipeline.safetyChecker));
  set.register(grayscaleFilter(options.grayscaleMaxChroma ?? DEFAULT_GRAYSCALE_MAX_CHROMA));
  return set.setDefaults(pipeline.safetyChecker ? ['nsfw'] : []);
}

/** Imports each FILTER_MODULES path and registers what its default export gives. */
export async function registerFilterModules(set: FilterSet, modules: readonly string[], context: FilterModuleContext): Promise<void> {
  for (const file of modules) {
    let exported: FilterModuleExport;
    try {
      const module = (await import(pathToFileURL(path.resolve(file)).href)) as { default?: FilterModuleExport };
      if (module.default === undefined) throw new Error('it has no default export');
      exported = module.default;
      const made = typeof exported === 'function' ? await exported(context) : exported;
      for (const filter of Array.isArray(made) ? made : [made]) set.register(filter);
    } catch (error) {
      throw new FilterRegistrationError(`FILTER_MODULES: ${file}: ${(error as Error).message}`, { cause: error });
    }
    context.logger.info({ module: file, filters: set.names }, 'filter module registered');
  }
}

/** A verdict as a filter returned it, checked: a filter's bug must not pass an image silently. */
export function checkedVerdict(name: string, verdict: unknown): FilterVerdict {
  const v = verdict as FilterVerdict | undefined;
  if (!v || typeof v !== 'object' || typeof v.passed !== 'boolean') {
    throw new Error(`filter "${name}" returned ${JSON.stringify(verdict)}, not a verdict { passed: boolean }`);
  }
  const out: FilterVerdict = { passed: v.passed };
  if (typeof v.score === 'number' && Number.isFinite(v.score)) out.score = v.score;
  if (typeof v.threshold === 'number' && Number.isFinite(v.threshold)) out.threshold = v.threshold;
  if (typeof v.detail === 'string') out.detail = v.detail.slice(0, 500);
  return out;
}
