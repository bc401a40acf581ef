import fc from 'fast-check';
import { z } from 'zod';
import { describe, expect, it, vi } from 'vitest';
import { drawSeed } from '../api/request-parsing.js';
import { loadConfig } from '../shared/config.js';
import { makeGenerationRequestSchema, MAX_SEED, maxSeedFor, queryToRequest } from '../shared/job-schema.js';
import { forbiddenKeyPath, parseBooleanText, parseNumberText } from '../shared/request-values.js';

/**
 * One reading of numbers and booleans for query strings and JSON bodies (JSON's own grammar),
 * prototype-reaching names refused by name, and seed ranges that fit in numpy's uint32 seeds.
 */
const schema = makeGenerationRequestSchema(loadConfig({}).limits);

// The random source answers the top of whatever range it is asked for: drawSeed's range shows.
vi.mock('node:crypto', async (importOriginal) => ({
  ...(await importOriginal<typeof import('node:crypto')>()),
  randomInt: (min: number, max?: number) => (max === undefined ? min - 1 : max - 1),
}));

describe('numbers and booleans in query strings', () => {
  it('reads exactly the texts JSON reads as numbers', () => {
    for (const [text, value] of [
      ['0', 0],
      ['512', 512],
      ['-1', -1],
      ['7.5', 7.5],
      ['1e3', 1000],
      ['1e-05', 0.00001],
      ['4294967295', MAX_SEED],
    ] as const) {
      expect(parseNumberText(text), text).toBe(value);
      expect(JSON.parse(text)).toBe(value);
    }
    for (const text of ['0x10', '0X1F', '+5', ' 5', '5 ', '\t5', '05', '1.', '.5', 'Infinity', '-Infinity', 'NaN', '', '1_000', '1,5', '٥', '0b1', '0o7', '1e400', '5\n']) {
      expect(parseNumberText(text), JSON.stringify(text)).toBeNull();
    }
  });

  it('agrees with JSON.parse on any text: a number for one is the same number for the other', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.double().map(String), fc.integer().map((n) => n.toString(16))), (text) => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        const ours = parseNumberText(text);
        const jsonNumber = typeof json === 'number' && Number.isFinite(json) && text.trim() === text ? json : null;
        expect(ours).toBe(jsonNumber);
      }),
      { numRuns: 2000 },
    );
  });

  it('reads booleans as JSON spells them', () => {
    expect(parseBooleanText('true')).toBe(true);
    expect(parseBooleanText('false')).toBe(false);
    for (const text of ['1', '0', 'TRUE', 'True', 'yes', ' true', '']) expect(parseBooleanText(text), text).toBeNull();
  });

  it('refuses hexadecimal, signed and padded numbers by parameter name', () => {
    for (const [name, text] of [
      ['seed', '0x10'],
      ['num_inference_steps', '+2'],
      ['width', ' 512'],
      ['height', '512 '],
      ['guidance_scale', '07.5'],
      ['num_images', ''],
    ] as const) {
      const { problems } = queryToRequest({ prompt: 'x', [name]: text }, schema);
      expect(problems, `${name}=${JSON.stringify(text)}`).toEqual([{ field: name, message: expect.stringContaining(name) }]);
    }
    expect(queryToRequest({ prompt: 'x', seed: '42', guidance_scale: '7.5' }, schema)).toEqual({
      value: { prompt: 'x', seed: 42, guidance_scale: 7.5 },
      problems: [],
    });
  });

  it('refuses prototype-reaching, repeated and structured parameters by name', () => {
    // As Express's query parser (querystring) builds it: an object without a prototype.
    const query = new URLSearchParams('prompt=x&__proto__=1&constructor=x&prototype=y&seed=1&seed=2&webhook=http://example.com');
    const parsed: Record<string, unknown> = Object.create(null);
    for (const key of new Set(query.keys())) parsed[key] = query.getAll(key).length > 1 ? query.getAll(key) : query.get(key);
    const { problems } = queryToRequest(parsed, schema);
    expect(Object.keys(parsed)).toContain('__proto__');
    expect(problems.map((p) => p.field)).toEqual(['__proto__', 'constructor', 'prototype', 'seed', 'webhook']);
  });

  it('reads a list of strings as comma-separated text, by the field type the schema gives', () => {
    const withList = z.strictObject({ prompt: z.string(), tags: z.array(z.string()).optional(), pairs: z.array(z.number()).optional() });
    expect(queryToRequest({ prompt: 'x', tags: 'a, b,,c' }, withList)).toEqual({ value: { prompt: 'x', tags: ['a', 'b', 'c'] }, problems: [] });
    expect(queryToRequest({ prompt: 'x', tags: '' }, withList).value.tags).toEqual([]);
    expect(queryToRequest({ prompt: 'x', pairs: '1,2' }, withList).problems.map((p) => p.field)).toEqual(['pairs']);
  });

  it('finds forbidden keys at any depth of a JSON body', () => {
    expect(forbiddenKeyPath(JSON.parse('{"prompt": "x", "__proto__": {"polluted": 1}}'))).toBe('__proto__');
    expect(forbiddenKeyPath(JSON.parse('{"prompt": "x", "webhook": {"url": "https://a.example", "constructor": {}}}'))).toBe('webhook.constructor');
    expect(forbiddenKeyPath(JSON.parse('{"prompt": "x", "webhook": {"events": [{"prototype": 1}]}}'))).toBe('webhook.events.0.prototype');
    expect(forbiddenKeyPath({ prompt: 'constructor', negative_prompt: '__proto__' })).toBeNull();
  });
});

describe('seeds', () => {
  it('refuses a seed whose last image would pass 2^32 − 1, naming seed', () => {
    const check = (seed: number, numImages: number) => schema.safeParse({ prompt: 'x', seed, num_images: numImages });
    expect(check(MAX_SEED, 1).success).toBe(true);
    expect(check(MAX_SEED - 3, 4).success).toBe(true);
    const over = check(MAX_SEED - 2, 4);
    expect(over.success).toBe(false);
    expect(over.error?.issues.map((i) => i.path.join('.'))).toEqual(['seed']);
    expect(over.error?.issues[0]?.message).toContain(String(MAX_SEED - 3));
  });

  it('draws random seeds from exactly the range that leaves room for every image', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), (n) => {
        expect(maxSeedFor(n) + n - 1).toBe(MAX_SEED);
        // randomInt is mocked to its range's top: the highest seed drawSeed can ever give.
        expect(drawSeed(n)).toBe(maxSeedFor(n));
      }),
    );
  });
});
