import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../shared/config.js';
import { builtinCatalogue, CatalogueError, parseCatalogue, routeModel, type ModelEntry } from '../shared/model-catalogue.js';
import { writeMissingTinyModels } from '../scripts/tiny-model/index.js';

const defaults = { minWorkers: 0, initialWorkers: 0, maxWorkers: undefined };

const problemsOf = (input: unknown): string[] => {
  try {
    parseCatalogue(input, defaults, '/srv');
  } catch (err) {
    if (err instanceof CatalogueError) return err.problems;
    throw err;
  }
  throw new Error('the catalogue was accepted');
};

describe('the model catalogue', () => {
  it('reads entries with their dirs, trigger words, queues and bounds; the first is the default unless one says so', () => {
    const models = parseCatalogue(
      {
        models: [
          { name: 'base', dir: 'models/base' },
          { name: 'dog', dir: '/exports/dog', trigger_words: ['sks', 'unqtkn'], default: true, autoscaling: { min_workers: 1, max_workers: 3 } },
        ],
      },
      { minWorkers: 0, initialWorkers: 2, maxWorkers: 4 },
      '/srv',
    );
    expect(models).toEqual([
      { name: 'base', dir: '/srv/models/base', queue: 'generate.base', triggerWords: [], isDefault: false, autoscaling: { minWorkers: 0, initialWorkers: 2, maxWorkers: 4 } },
      { name: 'dog', dir: '/exports/dog', queue: 'generate', triggerWords: ['sks', 'unqtkn'], isDefault: true, autoscaling: { minWorkers: 1, initialWorkers: 2, maxWorkers: 3 } },
    ]);
    // No default marked: the first one is; its queue is the historical `generate`.
    const [first] = parseCatalogue({ models: [{ name: 'a', dir: 'a' }, { name: 'b', dir: 'b', queue: 'jobs-b' }] }, defaults, '/srv');
    expect(first).toMatchObject({ isDefault: true, queue: 'generate' });
  });

  it.each<[string, unknown, string]>([
    ['not an object', [], 'the catalogue must be a JSON object'],
    ['no models', { models: [] }, 'models must list at least one model'],
    ['a missing dir', { models: [{ name: 'base' }] }, 'models[0] ("base"): dir: dir is required'],
    ['a bad name', { models: [{ name: 'a b', dir: 'x' }] }, 'models[0] ("a b"): name: name must be 1 to 64 letters'],
    ['the reserved name auto', { models: [{ name: 'auto', dir: 'x' }] }, 'models[0] ("auto"): name: name must not be "auto"'],
    ['a trigger word with a space', { models: [{ name: 'a', dir: 'x' }, { name: 'b', dir: 'y', trigger_words: ['two words'] }] }, 'models[1] ("b"): trigger_words.0: a trigger word is one word'],
    ['an unknown field', { models: [{ name: 'a', dir: 'x', trigger: ['sks'] }] }, 'models[0] ("a"): trigger: unknown field: trigger'],
    ['an unknown autoscaling field', { models: [{ name: 'a', dir: 'x', autoscaling: { max: 2 } }] }, 'models[0] ("a"): autoscaling.max: unknown field: max'],
    ['a negative minimum', { models: [{ name: 'a', dir: 'x', autoscaling: { min_workers: -1 } }] }, 'models[0] ("a"): autoscaling.min_workers: min_workers must be at least 0'],
    ['min above max', { models: [{ name: 'a', dir: 'x', autoscaling: { min_workers: 3, max_workers: 2 } }] }, 'models[0] ("a"): autoscaling.min_workers: 3 exceeds max_workers 2'],
    ['initial outside the bounds', { models: [{ name: 'a', dir: 'x', autoscaling: { initial_workers: 5, max_workers: 2 } }] }, 'models[0] ("a"): autoscaling.initial_workers: 5 must lie between'],
    ['two defaults', { models: [{ name: 'a', dir: 'x', default: true }, { name: 'b', dir: 'y', default: true }] }, 'models[1] ("b"): default: only one model may be the default (models[0] ("a") already is)'],
    ['a name twice', { models: [{ name: 'a', dir: 'x' }, { name: 'A', dir: 'y' }] }, 'models[1] ("A"): name: "A" is already the name of models[0] ("a")'],
    ['a trigger word twice', { models: [{ name: 'a', dir: 'x', trigger_words: ['sks'] }, { name: 'b', dir: 'y', trigger_words: ['SKS'] }] }, 'models[1] ("b"): trigger_words[0]: "SKS" is already a trigger word of models[0] ("a")'],
    ['a queue twice', { models: [{ name: 'a', dir: 'x' }, { name: 'b', dir: 'y', queue: 'generate' }] }, 'models[1] ("b"): queue: "generate" is already the queue of models[0] ("a")'],
    ['a queue name with a colon', { models: [{ name: 'a', dir: 'x', queue: 'q:1' }] }, 'models[0] ("a"): queue: queue must be letters'],
  ])('refuses %s, naming the entry and the field', (_what, input, expected) => {
    expect(problemsOf(input).join('\n')).toContain(expected);
  });

  it('stops the process at boot through MODELS_FILE, naming the variable, the entry and the field', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-catalogue-'));
    try {
      const file = path.join(dir, 'models.json');
      fs.writeFileSync(file, JSON.stringify({ models: [{ name: 'base', dir: 'b' }, { name: 'dog', dir: 'd', trigger_words: [42] }] }));
      expect(() => loadConfig({ MODELS_FILE: file })).toThrow(ConfigError);
      expect(() => loadConfig({ MODELS_FILE: file })).toThrow(/MODELS_FILE: models\[1\] \("dog"\): trigger_words\.0: a trigger word must be a string/);
      fs.writeFileSync(file, '{ not json');
      expect(() => loadConfig({ MODELS_FILE: file })).toThrow(/MODELS_FILE: cannot read a JSON catalogue/);
      fs.writeFileSync(file, JSON.stringify({ models: [{ name: 'base', dir: 'b' }, { name: 'dog', dir: 'd', trigger_words: ['sks'] }] }));
      const config = loadConfig({ MODELS_FILE: file, WORKER_MODEL: 'dog' });
      expect(config.models.map((m) => m.name)).toEqual(['base', 'dog']);
      // A worker's model is WORKER_MODEL's, with its own queue.
      expect(config.model).toMatchObject({ name: 'dog', queue: 'generate.dog', dir: path.resolve('d') });
      expect(() => loadConfig({ MODELS_FILE: file, WORKER_MODEL: 'cat' })).toThrow(/WORKER_MODEL: no model "cat" in the catalogue \(it has base, dog\)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('MODEL_DIR alone is a one-model catalogue on the generate queue; nothing configured is the two tiny models', () => {
    const single = loadConfig({ MODEL_DIR: '/exports/sd15', MODEL_NAME: 'sd15' });
    expect(single.models).toEqual([
      expect.objectContaining({ name: 'sd15', dir: '/exports/sd15', queue: 'generate', isDefault: true, triggerWords: [] }),
    ]);
    expect(single.model).toMatchObject({ name: 'sd15', dir: '/exports/sd15', queue: 'generate' });
    const none = loadConfig({});
    expect(none.models.map((m) => [m.name, m.queue, m.triggerWords, m.isDefault, m.tinySeed])).toEqual([
      ['tiny-sd', 'generate', [], true, 42],
      ['tiny-sd-unqtkn', 'generate.tiny-sd-unqtkn', ['unqtkn'], false, 4242],
    ]);
    expect(none.model.name).toBe('tiny-sd');
  });
});

describe('the router', () => {
  const catalogue: ModelEntry[] = parseCatalogue(
    {
      models: [
        { name: 'base', dir: 'b' },
        { name: 'dog', dir: 'd', trigger_words: ['unqtkn'] },
        { name: 'cat', dir: 'c', trigger_words: ['sks', 'sks-cat'] },
      ],
    },
    defaults,
  );
  const route = (prompt: string, model?: string) => {
    const r = routeModel(catalogue, model, prompt);
    return r.ok ? [r.model.name, r.routedBy] : ['error', r.message];
  };

  it('sends a prompt with a trigger word (a whole word, any case) to its model, any other to the default', () => {
    expect(route('photo of unqtkn dog having breakfast')).toEqual(['dog', 'trigger word "unqtkn"']);
    expect(route('Photo of UNQTKN, on a beach')).toEqual(['dog', 'trigger word "unqtkn"']);
    expect(route('unqtkn')).toEqual(['dog', 'trigger word "unqtkn"']);
    expect(route('a red fox in the snow')).toEqual(['base', 'default']);
    // Part of a longer word is not the word.
    expect(route('photo of unqtkn2 dog')).toEqual(['base', 'default']);
    expect(route('photo of xunqtkn dog')).toEqual(['base', 'default']);
    expect(route('photo of unqtkn_dog')).toEqual(['base', 'default']);
  });

  it('settles ambiguity: the earliest trigger word in the prompt wins, the longer one at the same place', () => {
    expect(route('sks cat next to an unqtkn dog')).toEqual(['cat', 'trigger word "sks"']);
    expect(route('an unqtkn dog next to a sks cat')).toEqual(['dog', 'trigger word "unqtkn"']);
    expect(route('a sks-cat and an unqtkn dog')).toEqual(['cat', 'trigger word "sks-cat"']);
    // Deterministic: the same prompt always routes the same way.
    for (let i = 0; i < 3; i++) expect(route('unqtkn sks')).toEqual(['dog', 'trigger word "unqtkn"']);
  });

  it('at the same place and length, the model listed first in the catalogue wins', () => {
    const tied = parseCatalogue(
      { models: [{ name: 'base', dir: 'b' }, { name: 'first', dir: 'f', trigger_words: ['ab-cd'] }, { name: 'second', dir: 's', trigger_words: ['ab'] }] },
      defaults,
    );
    // `ab-cd` and `ab` both start at 0: the longer wins; alone, `ab` routes to its own model.
    expect(routeModel(tied, undefined, 'ab-cd photo')).toMatchObject({ ok: true, model: { name: 'first' } });
    expect(routeModel(tied, undefined, 'ab photo')).toMatchObject({ ok: true, model: { name: 'second' } });
  });

  it('honours an explicit model over trigger words, takes auto as absent, and refuses an unknown name', () => {
    expect(route('photo of unqtkn dog', 'base')).toEqual(['base', 'explicit']);
    expect(route('photo of unqtkn dog', 'auto')).toEqual(['dog', 'trigger word "unqtkn"']);
    expect(route('photo of unqtkn dog', 'AUTO')).toEqual(['dog', 'trigger word "unqtkn"']);
    const [outcome, message] = route('x', 'sdxl');
    expect(outcome).toBe('error');
    expect(message).toContain('unknown model "sdxl"; this service serves "base", "dog", "cat"');
  });

  it('routes the built-in catalogue the tutorial way', () => {
    const builtin = builtinCatalogue(defaults, '/srv');
    expect(routeModel(builtin, undefined, 'photo of unqtkn dog having breakfast')).toMatchObject({ ok: true, model: { name: 'tiny-sd-unqtkn' }, routedBy: 'trigger word "unqtkn"' });
    expect(routeModel(builtin, undefined, 'a lighthouse at dusk')).toMatchObject({ ok: true, model: { name: 'tiny-sd' }, routedBy: 'default' });
  });
});

describe('npm start with nothing configured', () => {
  it('writes the two tiny models that are missing, with different weights, and leaves present ones alone', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-builtin-'));
    try {
      const models = builtinCatalogue({ minWorkers: 0, initialWorkers: 0, maxWorkers: undefined }, root);
      const warned: string[] = [];
      const logger = { warn: (_fields: object, message: string) => void warned.push(message) };
      expect(await writeMissingTinyModels({ models, model: { autoTiny: true } }, logger)).toBeNull();
      expect(warned.map((m) => m.split(' (')[0])).toEqual([
        'no model found: writing the tiny random-weight test model tiny-sd',
        'no model found: writing the tiny random-weight test model tiny-sd-unqtkn',
      ]);
      const weights = (name: string) => fs.readFileSync(path.join(root, 'models', name, 'unet', 'model.onnx_data'));
      expect(weights('tiny-sd').length).toBe(weights('tiny-sd-unqtkn').length);
      expect(weights('tiny-sd').equals(weights('tiny-sd-unqtkn'))).toBe(false);
      // Present now: nothing written again.
      expect(await writeMissingTinyModels({ models, model: { autoTiny: true } }, logger)).toBeNull();
      expect(warned).toHaveLength(2);
      // A catalogue model that is not a tiny one, or MODEL_AUTO_TINY=false: reported, not written.
      const real = parseCatalogue({ models: [{ name: 'sd15', dir: 'nowhere' }] }, defaults, root);
      expect(await writeMissingTinyModels({ models: real, model: { autoTiny: true } }, logger)).toMatchObject({ name: 'sd15' });
      const off = builtinCatalogue(defaults, path.join(root, 'other'));
      expect(await writeMissingTinyModels({ models: off, model: { autoTiny: false } }, logger)).toMatchObject({ name: 'tiny-sd' });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
