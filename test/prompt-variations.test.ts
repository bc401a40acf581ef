/** Prompt variants: chosen from the seed, distinct within a job, the prompt always kept as written. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../shared/config.js';
import { DEFAULT_PROMPT_MODIFIERS, promptVariants } from '../shared/prompt-variations.js';

const prompt = 'photo of sks dog on the beach';

describe('promptVariants', () => {
  it('keeps the prompt verbatim in front and adds one modifier from each category', () => {
    const variants = promptVariants(prompt, 42, 8);
    const categories = Object.values(DEFAULT_PROMPT_MODIFIERS);
    for (const variant of variants) {
      expect(variant.startsWith(`${prompt}, `)).toBe(true);
      const added = variant.slice(prompt.length + 2).split(', ');
      expect(added).toHaveLength(categories.length);
      added.forEach((modifier, c) => expect(categories[c]).toContain(modifier));
    }
  });

  it('is distinct within a job, the same for the same seed, and another for another seed', () => {
    const a = promptVariants(prompt, 42, 64);
    expect(new Set(a).size).toBe(64);
    expect(promptVariants(prompt, 42, 64)).toEqual(a);
    expect(promptVariants(prompt, 43, 64)).not.toEqual(a);
    // The first k variants do not depend on how many images the job has.
    expect(promptVariants(prompt, 42, 3)).toEqual(a.slice(0, 3));
  });

  it('spreads over the modifiers (no category stuck on one value)', () => {
    const variants = promptVariants(prompt, 7, 64);
    for (const [c, list] of Object.values(DEFAULT_PROMPT_MODIFIERS).entries()) {
      const used = new Set(variants.map((v) => v.slice(prompt.length + 2).split(', ')[c]));
      expect(used.size, `category ${c}`).toBeGreaterThan(list.length / 2);
    }
  });

  it('uses a configured set, and repeats only once every combination is taken', () => {
    const small = { mood: ['calm', 'stormy'], time: ['dawn'] };
    const variants = promptVariants('a sea', 1, 5, small);
    expect(new Set(variants.slice(0, 2))).toEqual(new Set(['a sea, calm, dawn', 'a sea, stormy, dawn']));
    expect(variants.slice(2).every((v) => v === 'a sea, calm, dawn' || v === 'a sea, stormy, dawn')).toBe(true);
    expect(promptVariants('a sea', 1, 2, {})).toEqual(['a sea', 'a sea']);
  });
});

describe('PROMPT_MODIFIERS_FILE and the filter settings', () => {
  it('reads a modifier file, and stops naming the variable when the file is wrong', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'sd-modifiers-'));
    try {
      const good = path.join(dir, 'good.json');
      await writeFile(good, JSON.stringify({ style: ['linocut', 'pastel'], lighting: ['candlelight'] }));
      expect(loadConfig({ PROMPT_MODIFIERS_FILE: good }).promptModifiers).toEqual({ style: ['linocut', 'pastel'], lighting: ['candlelight'] });
      const bad = path.join(dir, 'bad.json');
      await writeFile(bad, JSON.stringify({ style: [] }));
      expect(() => loadConfig({ PROMPT_MODIFIERS_FILE: bad })).toThrow(/PROMPT_MODIFIERS_FILE: style: each category needs at least one modifier/);
      expect(() => loadConfig({ PROMPT_MODIFIERS_FILE: path.join(dir, 'missing.json') })).toThrow(/PROMPT_MODIFIERS_FILE: cannot read/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    expect(loadConfig({}).promptModifiers).toBe(DEFAULT_PROMPT_MODIFIERS);
  });

  it('parses the filter settings with their ranges', () => {
    expect(loadConfig({}).filters).toEqual({ maxTries: 3, grayscaleMaxChroma: 12, modules: [] });
    expect(loadConfig({ FILTER_MAX_TRIES: '1', FILTER_GRAYSCALE_MAX_CHROMA: '4.5', FILTER_MODULES: 'a.mjs, b.mjs' }).filters).toEqual({
      maxTries: 1,
      grayscaleMaxChroma: 4.5,
      modules: ['a.mjs', 'b.mjs'],
    });
    expect(() => loadConfig({ FILTER_MAX_TRIES: '0' })).toThrow(/FILTER_MAX_TRIES/);
    expect(() => loadConfig({ FILTER_MAX_TRIES: '11' })).toThrow(/FILTER_MAX_TRIES/);
    expect(() => loadConfig({ FILTER_GRAYSCALE_MAX_CHROMA: '256' })).toThrow(/FILTER_GRAYSCALE_MAX_CHROMA/);
  });
});
