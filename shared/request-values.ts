/**
 * The one reading of numbers and booleans that a request may carry, as JSON or as query-string
 * text. A query value is read exactly as JSON would read the same characters: a number is JSON's
 * number token (decimal digits, an optional leading minus, fraction and exponent) with nothing
 * around it — no hexadecimal, no `+`, no spaces, no leading zeros, no `Infinity`; a boolean is
 * `true` or `false`. A JSON body is already in that grammar, so both routes accept the same
 * values and refuse the same ones.
 */

const JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

/** The number `text` spells as a JSON number token, or null when it is anything else. */
export function parseNumberText(text: string): number | null {
  if (!JSON_NUMBER.test(text)) return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : null;
}

/** `true` / `false`, as JSON spells them; null for anything else (`1`, `yes`, `TRUE`, ` true`). */
export function parseBooleanText(text: string): boolean | null {
  return text === 'true' ? true : text === 'false' ? false : null;
}

/** Names that reach an object's prototype when used as keys: never a request field. */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** The dotted path of the first forbidden key in `value` (objects and arrays, any depth), or null. */
export function forbiddenKeyPath(value: unknown, at = ''): string | null {
  if (value === null || typeof value !== 'object') return null;
  for (const key of Object.keys(value)) {
    const here = at === '' ? key : `${at}.${key}`;
    if (FORBIDDEN_KEYS.has(key)) return here;
    const inner = forbiddenKeyPath((value as Record<string, unknown>)[key], here);
    if (inner !== null) return inner;
  }
  return null;
}
