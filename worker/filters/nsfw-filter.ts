import type { SafetyChecker } from '../pipeline/types.js';
import type { ImageFilter } from './types.js';

/** The export's safety checker as a filter: `has_nsfw_concepts` screens the image out. */
export function nsfwFilter(checker: SafetyChecker): ImageFilter {
  return {
    name: 'nsfw',
    async check(image) {
      const { nsfw } = await checker.check(image);
      return nsfw ? { passed: false, detail: 'the safety checker found potential NSFW content' } : { passed: true };
    },
  };
}
