/**
 * Prompt variations: with `prompt_variations`, each image of a job gets its own variant of the
 * prompt, the prompt as written followed by one modifier from each category (style, lighting,
 * lens, composition, …). The prompt comes first and unchanged, so its subject and trigger words
 * (`sks dog`) stay intact and early in CLIP's 77-token window; modifiers only add.
 *
 * Variants are chosen from the seed alone: the same seed and prompt give the same variants, and
 * the first k variants do not depend on how many images the job has. Within a job they are
 * distinct while the categories have enough combinations (the default set has 2304); past that
 * they repeat.
 */
import { z } from 'zod';

export type PromptModifiers = Readonly<Record<string, readonly string[]>>;

export const DEFAULT_PROMPT_MODIFIERS: PromptModifiers = {
  style: [
    'photograph',
    'digital painting',
    'watercolor painting',
    'oil painting',
    'cinematic film still',
    'concept art',
    '3d render',
    'ink illustration',
  ],
  lighting: [
    'golden hour light',
    'soft diffuse light',
    'dramatic side lighting',
    'overcast daylight',
    'neon lighting',
    'backlit',
    'studio lighting',
    'moonlight',
  ],
  lens: ['35mm lens', '85mm portrait lens', 'wide-angle lens', 'telephoto lens', 'macro lens', 'shallow depth of field'],
  composition: ['centered composition', 'rule of thirds', 'close-up', 'wide shot', 'low angle view', 'aerial view'],
};

/** What PROMPT_MODIFIERS_FILE must hold: `{ "category": ["modifier", …], … }`. */
export const PromptModifiersSchema = z
  .record(
    z.string().regex(/^[a-z][a-z0-9_]{0,31}$/, 'category names are lowercase letters, digits and _'),
    z
      .array(z.string().trim().min(1, 'a modifier must not be empty').max(100, 'a modifier has at most 100 characters'))
      .min(1, 'each category needs at least one modifier')
      .max(100, 'a category has at most 100 modifiers'),
  )
  .refine((value) => Object.keys(value).length >= 1 && Object.keys(value).length <= 16, 'expected 1 to 16 categories');

/** A small seeded generator (splitmix32): uniform 32-bit integers. */
function generator(seed: number): () => number {
  let state = (seed ^ 0x9e3779b9) >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** `count` variants of `prompt`, chosen from `seed`. */
export function promptVariants(prompt: string, seed: number, count: number, modifiers: PromptModifiers = DEFAULT_PROMPT_MODIFIERS): string[] {
  const categories = Object.values(modifiers).filter((list) => list.length > 0);
  if (categories.length === 0) return Array.from({ length: count }, () => prompt);
  const combinations = categories.reduce((product, list) => product * list.length, 1);
  const next = generator(seed);
  const used = new Set<number>();
  const variants: string[] = [];
  for (let i = 0; i < count; i++) {
    if (used.size === combinations) used.clear(); // every combination taken: start over
    let pick: number;
    do {
      // Two draws make the index uniform enough for any realistic number of combinations.
      pick = (next() * 2 ** 21 + (next() >>> 11)) % combinations;
    } while (used.has(pick));
    used.add(pick);
    const chosen: string[] = [];
    let rest = pick;
    for (const list of categories) {
      chosen.push(list[rest % list.length]!);
      rest = Math.floor(rest / list.length);
    }
    variants.push(`${prompt}, ${chosen.join(', ')}`);
  }
  return variants;
}
