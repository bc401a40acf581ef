import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipTokenizer, padIds } from '../worker/pipeline/tokenizer.js';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const assetDir = path.join(root, 'assets', 'clip-tokenizer');
const fixture = JSON.parse(readFileSync(path.join(root, 'test', 'fixtures', 'clip-token-ids.json'), 'utf8')) as {
  bos: number;
  eos: number;
  max_length: number;
  cases: Record<string, number[]>;
};

const BOS = 49406;
const EOS = 49407;
const VOCAB_SIZE = 49408;

// Hand-derived expectations below: the text is cleaned and split as simple_tokenizer.py does,
// each piece's UTF-8 bytes mapped through bytes_to_unicode, merged with merges.txt, and every
// resulting token (shown in the comment) looked up in vocab.json. They were cross-checked
// against a Python port of simple_tokenizer.py (the `regex` module, without ftfy).

let tokenizer: ClipTokenizer;

beforeAll(async () => {
  tokenizer = await ClipTokenizer.fromDir(assetDir);
});

describe('ClipTokenizer against the reference ids', () => {
  it.each(Object.entries(fixture.cases))('%j', (prompt, ids) => {
    expect(tokenizer.encode(prompt)).toEqual(ids);
  });

  it('uses the fixture special ids and length', () => {
    expect(tokenizer.bosId).toBe(fixture.bos);
    expect(tokenizer.eosId).toBe(fixture.eos);
    expect(tokenizer.maxLength).toBe(fixture.max_length);
    // No tokenizer_config.json in assets: SD 1.x's default, pad with eos.
    expect(tokenizer.padId).toBe(EOS);
  });
});

describe('ClipTokenizer.encode', () => {
  it('gives bos, eos for an empty or blank prompt', () => {
    expect(tokenizer.encode('')).toEqual([BOS, EOS]);
    expect(tokenizer.encode(' \n\t\u3000 ')).toEqual([BOS, EOS]);
  });

  it('truncates a long prompt to 77 ids with eos last', () => {
    // "a photo of a cat, " → a</w> 320, photo</w> 1125, of</w> 539, a</w> 320, cat</w> 2368,
    // ,</w> 267 (ids as in the fixture); 20 repeats are 120 tokens, of which 75 fit.
    const period = [320, 1125, 539, 320, 2368, 267];
    const tokens = Array.from({ length: 75 }, (_, i) => period[i % period.length]!);
    const ids = tokenizer.encode('a photo of a cat, '.repeat(20));
    expect(ids).toHaveLength(77);
    expect(ids).toEqual([BOS, ...tokens, EOS]);
    expect(ids.at(-1)).toBe(EOS);
    // 75 tokens fit exactly: nothing is cut.
    expect(tokenizer.encode('a '.repeat(75))).toEqual([BOS, ...Array<number>(75).fill(320), EOS]);
    expect(tokenizer.encode('a '.repeat(76))).toEqual([BOS, ...Array<number>(75).fill(320), EOS]);
  });

  it('collapses whitespace of every kind and lowercases', () => {
    const cat = fixture.cases['a photo of a cat']!;
    expect(tokenizer.encode('  a  photo\n\tof\u00a0a\u3000cat ')).toEqual(cat);
    expect(tokenizer.encode('A PHOTO OF A CAT')).toEqual(cat);
  });

  it('unescapes HTML entities, twice, like html.unescape(html.unescape(text))', () => {
    // cat</w> 2368, &</w> 261, dog</w> 1929.
    const plain = [BOS, 2368, 261, 1929, EOS];
    expect(tokenizer.encode('cat & dog')).toEqual(plain);
    expect(tokenizer.encode('cat &amp; dog')).toEqual(plain);
    expect(tokenizer.encode('cat &amp;amp; dog')).toEqual(plain);
    expect(tokenizer.encode('cat &#38; dog')).toEqual(plain);
    expect(tokenizer.encode('cat &#x26; dog')).toEqual(plain);
    // <</w> 283, 3</w> 274, "</w> 257, hi</w> 1883, '</w> 262, x</w> 343, Ã© 3459 (é),
    // tÃ©</w> 39694, Â©</w> 5811 (©, from the semicolon-less legacy name), 2 0 2 4.
    expect(tokenizer.encode('&lt;3 &quot;hi&quot; &#39;x&#x27; &eacute;t&eacute; &copy2024')).toEqual([
      BOS, 283, 274, 257, 1883, 257, 262, 343, 262, 3459, 39694, 5811, 273, 271, 273, 275, EOS,
    ]);
    // HTML5's longest-prefix rule: "&not" + "anentity;" → Â 126, ¬</w> 361, an 514,
    // entity</w> 28455, ;</w> 282.
    expect(tokenizer.encode('&notanentity;')).toEqual([BOS, 126, 361, 514, 28455, 282, EOS]);
    // Unknown, or apos without its semicolon: left as written. &</w> 261, zzz</w> 20055,
    // apo 4089, s</w> 338.
    expect(tokenizer.encode('&zzz;')).toEqual([BOS, 261, 20055, 282, EOS]);
    expect(tokenizer.encode('&apos')).toEqual([BOS, 261, 4089, 338, EOS]);
    // Python's numeric rules: &#0; and surrogates → U+FFFD (ï¿½</w> 39802), C1 codes read as
    // Windows-1252 (&#x80; → € = âĤ¬ 34919), control codes dropped (&#1;).
    expect(tokenizer.encode('&#0;x&#x80;&#xD800;&#1;')).toEqual([BOS, 39802, 343, 34919, 39802, EOS]);
  });

  it('splits digits one per token', () => {
    // 2</w> 273, 0</w> 271, 2</w> 273, 4</w> 275.
    expect(tokenizer.encode('2024')).toEqual([BOS, 273, 271, 273, 275, EOS]);
  });

  it("keeps contractions as CLIP's 's 't 're … pieces", () => {
    // it</w> 585, 's</w> 568.
    expect(tokenizer.encode("it's")).toEqual([BOS, 585, 568, EOS]);
    expect(tokenizer.encode("IT'S")).toEqual([BOS, 585, 568, EOS]);
    // A curly apostrophe is not one (ftfy would straighten it; this port does not):
    // it</w> 585, âĢ 728, Ļ</w> 503 (U+2019's bytes), s</w> 338.
    expect(tokenizer.encode('it\u2019s')).toEqual([BOS, 585, 728, 503, 338, EOS]);
  });

  it('encodes a prompt that spells out a special token as that token', () => {
    expect(tokenizer.encode('<|endoftext|>')).toEqual([BOS, EOS, EOS]);
    expect(tokenizer.encode('<|startoftext|>')).toEqual([BOS, BOS, EOS]);
  });

  describe('non-ASCII, through the byte-level mapping', () => {
    const cases: Array<[string, number[], string]> = [
      ['café', [15304], 'cafÃ©</w>'],
      // e + U+0301: NFC (ftfy's and the fast tokenizer's normalisation) makes it é.
      ['cafe\u0301', [15304], 'cafÃ©</w>'],
      ['café crème brûlée', [15304, 1075, 12138, 614, 711, 127, 119, 75, 13489], 'cafÃ©</w> cr Ã¨ me</w> br Ã » l Ã©e</w>'],
      ['Straße ÆSIR', [1894, 127, 253, 324, 42495, 3846], 'stra Ã Ł e</w> Ã¦ sir</w>'],
      // Python's lower(): İ → i + U+0307, which is not a letter and so a piece of its own.
      ['İstanbul', [328, 16384, 11231], 'i</w> Ìĩ</w> stanbul</w>'],
      // Final sigma: ΟΔΟΣ → οδος.
      ['ΟΔΟΣ', [138, 123, 138, 112, 138, 123, 139, 480], 'Î ¿ Î ´ Î ¿ Ï Ĥ</w>'],
      ['猫の写真', [163, 234, 104, 21575, 44653, 33440, 509], 'ç Į « ãģ® åĨĻ çľ Ł</w>'],
      ['一只猫', [19759, 222, 34517, 103, 163, 234, 360], 'ä¸ Ģ åı ª ç Į «</w>'],
      // 😀 = F0 9F 98 80 → ð Ł ĺ Ģ</w>; merges "ð Ł" (rank 46), "ðŁ ĺ" (156), "ðŁĺ Ģ</w>" (6822).
      ['😀', [7334], 'ðŁĺĢ</w>'],
      ['a cat 🐱 with 👍🏽', [320, 2368, 22979, 593, 43722], 'a</w> cat</w> ðŁĲ±</w> with</w> ðŁĳįðŁı½</w>'],
    ];
    it.each(cases)('%j', (prompt, tokens) => {
      const ids = tokenizer.encode(prompt);
      expect(ids).toEqual([BOS, ...tokens, EOS]);
    });

    it('always yields vocabulary ids', () => {
      const prompts = [
        ...cases.map(([prompt]) => prompt),
        'Ελληνικά русский язык العربية हिन्दी 한국어 ไทย',
        '👨‍👩‍👧 🇫🇷 ❤️ ✨ ½ ² Ⅻ ① ٣ ߐ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
        'lone surrogate \ud800 and \u0000 \u001c \u0085 \ufeff \u{10ffff}',
      ];
      for (const prompt of prompts) {
        for (const id of tokenizer.encode(prompt)) {
          expect(Number.isInteger(id)).toBe(true);
          expect(id).toBeGreaterThanOrEqual(0);
          expect(id).toBeLessThan(VOCAB_SIZE);
        }
      }
    });
  });

  it('returns a fresh array each time (the per-word cache is not exposed)', () => {
    const first = tokenizer.encode('a photo of a cat');
    first.push(1, 2, 3);
    expect(tokenizer.encode('a photo of a cat')).toEqual(fixture.cases['a photo of a cat']);
  });
});

describe('padding', () => {
  let tmpDir: string;

  beforeAll(async () => {
    tmpDir = await mkdtemp(path.join(os.tmpdir(), 'clip-tokenizer-'));
  });

  afterAll(async () => {
    await rm(tmpDir, { recursive: true, force: true });
  });

  async function tokenizerDir(name: string, files: Record<string, unknown>): Promise<string> {
    const dir = path.join(tmpDir, name);
    await mkdir(dir);
    await copyFile(path.join(assetDir, 'vocab.json'), path.join(dir, 'vocab.json'));
    await copyFile(path.join(assetDir, 'merges.txt'), path.join(dir, 'merges.txt'));
    for (const [file, content] of Object.entries(files)) {
      await writeFile(path.join(dir, file), JSON.stringify(content));
    }
    return dir;
  }

  it('pads with eos (SD 1.x) by default', () => {
    const ids = tokenizer.encodePadded('a photo of a cat');
    expect(ids).toHaveLength(77);
    expect(ids).toEqual([...fixture.cases['a photo of a cat']!, ...Array<number>(70).fill(EOS)]);
  });

  it('pads with "!" (id 0) when tokenizer_config.json says so (SD 2.x, SD-Turbo)', async () => {
    const dir = await tokenizerDir('sd2', {
      'tokenizer_config.json': { pad_token: '!', model_max_length: 77, bos_token: '<|startoftext|>' },
    });
    const sd2 = await ClipTokenizer.fromDir(dir);
    expect(sd2.padId).toBe(0);
    expect(sd2.eosId).toBe(EOS);
    const ids = sd2.encodePadded('a photo of a cat');
    expect(ids).toEqual([...fixture.cases['a photo of a cat']!, ...Array<number>(70).fill(0)]);
    // Unpadded ids do not depend on the pad token.
    expect(sd2.encode('a photo of a cat')).toEqual(tokenizer.encode('a photo of a cat'));
  });

  it('reads AddedToken objects, lets special_tokens_map.json win, and reads model_max_length', async () => {
    const dir = await tokenizerDir('mixed', {
      'tokenizer_config.json': { pad_token: '<|endoftext|>', model_max_length: 8 },
      'special_tokens_map.json': { pad_token: { content: '!', lstrip: false, rstrip: false } },
    });
    const mixed = await ClipTokenizer.fromDir(dir);
    expect(mixed.padId).toBe(0);
    expect(mixed.maxLength).toBe(8);
    expect(mixed.encode('a photo of a cat, 8k')).toEqual([BOS, 320, 1125, 539, 320, 2368, 267, EOS]);
    expect(mixed.encodePadded('a cat')).toEqual([BOS, 320, 2368, EOS, 0, 0, 0, 0]);
  });

  it("ignores transformers' no-limit model_max_length sentinel", async () => {
    const dir = await tokenizerDir('nolimit', {
      'tokenizer_config.json': { model_max_length: 1e30 },
    });
    expect((await ClipTokenizer.fromDir(dir)).maxLength).toBe(77);
  });

  it('padIds pads a copy and refuses to cut', () => {
    const ids = [BOS, 320, EOS];
    expect(padIds(ids, 5, 0)).toEqual([BOS, 320, EOS, 0, 0]);
    expect(ids).toEqual([BOS, 320, EOS]);
    expect(padIds(ids, 3, 0)).toEqual(ids);
    expect(() => padIds(ids, 2, 0)).toThrow(RangeError);
  });
});
