import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startStack, type TestStack } from './helpers/stack.js';

/**
 * The playground page end to end in headless Chromium (Debian's package; .ci/run installs it):
 * type a prompt, click, watch the job, see the image at its real size. With API keys on, the key
 * typed into the page goes with every request, the event stream and the image fetches included.
 * A screenshot lands in test-results/ for people to look at.
 */
const CHROMIUM = '/usr/bin/chromium';
const API_KEY = 'playground-test-key-0123456789';
const ARTIFACTS = path.resolve(import.meta.dirname, '..', 'test-results');

let stack: TestStack;
let storage: string;
let browser: Browser;
let page: Page;
const requests: string[] = [];
const consoleErrors: string[] = [];

const haveChromium = fs.existsSync(CHROMIUM);

describe.skipIf(!haveChromium)(`playground at /${haveChromium ? '' : ' (skipped: no /usr/bin/chromium; apt-get install chromium)'}`, () => {
  beforeAll(async () => {
    storage = await fsp.mkdtemp(path.join(os.tmpdir(), 'sdjobs-playground-'));
    stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: storage, DEFAULT_STEPS: '2', API_KEYS: API_KEY });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.on('request', (request) => requests.push(request.url()));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    page.on('pageerror', (err) => consoleErrors.push(err.message));
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    if (storage) await fsp.rm(storage, { recursive: true, force: true });
  });

  it('generates an image from a typed prompt and shows it at its real size with its seed', { timeout: 90_000 }, async () => {
    await page.goto(`${stack.api.url}/`);
    await expect.poll(() => page.locator('#scheduler option').count()).toBeGreaterThan(1);
    // The document says keys are required: the key field is open.
    expect(await page.locator('#key-panel').getAttribute('open')).not.toBeNull();
    await page.fill('#api-key', API_KEY);
    await page.locator('#api-key').dispatchEvent('change');
    // The model picker comes from GET /v1/models (once there is a key): auto, then each model.
    await expect.poll(() => page.locator('#model option').count()).toBe(2);
    expect(await page.locator('#model option').evaluateAll((els) => els.map((el) => (el as HTMLOptionElement).value))).toEqual(['', stack.config.model.name]);
    await page.selectOption('#model', stack.config.model.name);

    await page.fill('#prompt', 'a lighthouse on a cliff at dusk');
    await page.fill('#negative_prompt', 'blurry');
    await page.fill('#width', '96');
    await page.fill('#height', '64');
    await page.fill('#num_images', '2');
    await page.fill('#num_inference_steps', '3');
    await page.fill('#seed', '1234');
    await page.selectOption('#scheduler', 'euler_a');
    await page.click('#submit');

    const status = page.locator('#current-status');
    await expect.poll(() => status.textContent(), { timeout: 50_000 }).toMatch(/^(succeeded|failed|canceled)$/);
    const shown = { status: await status.textContent(), error: await page.locator('#current-error').textContent() };
    expect(shown).toEqual({ status: 'succeeded', error: '' });
    const images = page.locator('#images img');
    await expect.poll(() => images.count()).toBe(2);
    await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>('#images img')].every((img) => img.complete && img.naturalWidth > 0), undefined, {
      timeout: 30_000,
    });
    const sizes = await images.evaluateAll((els) => els.map((el) => [(el as HTMLImageElement).naturalWidth, (el as HTMLImageElement).naturalHeight]));
    expect(sizes).toEqual([
      [96, 64],
      [96, 64],
    ]);
    expect(await page.locator('#images figcaption span').allTextContents()).toEqual(['seed 1234', 'seed 1235']);
    expect(await page.locator('#current-status').textContent()).toBe('succeeded');
    expect(await page.locator('#current-model').textContent()).toBe(`${stack.config.model.name} · explicit`);
    expect(await page.locator('#current-progress').evaluate((el) => [(el as HTMLProgressElement).value, (el as HTMLProgressElement).max])).toEqual([3, 3]);

    // Listed as a job of this browser.
    await expect.poll(() => page.locator('#history li').count()).toBe(1);
    expect(await page.locator('#history li .job-prompt').textContent()).toBe('a lighthouse on a cliff at dusk');
    expect(await page.locator('#history li .status').textContent()).toBe('succeeded');

    await fsp.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'playground.png'), fullPage: true });

    // Progress came from the event stream (fetch, so the key could go along), not from polling.
    expect(requests.some((url) => /\/v1\/jobs\/[0-9a-f-]{36}\/events$/.test(url))).toBe(true);
    expect(requests.filter((url) => /\/v1\/jobs\/[0-9a-f-]{36}$/.test(url))).toEqual([]);
    // Nothing left this origin.
    expect(requests.filter((url) => !url.startsWith(stack.api.url) && !url.startsWith('blob:') && !url.startsWith('data:'))).toEqual([]);
    expect(consoleErrors).toEqual([]);
  });

  it('keeps the jobs of this browser across a reload and reopens one', async () => {
    await page.reload();
    await expect.poll(() => page.locator('#history li').count()).toBe(1);
    await page.click('#history li');
    await expect.poll(() => page.locator('#images img').count()).toBe(2);
    expect(await page.locator('#current-status').textContent()).toBe('succeeded');
  });

  it('sends the filter toggles and the variations switch, and shows each image’s prompt and verdicts', { timeout: 90_000 }, async () => {
    const posted: Array<Record<string, unknown>> = [];
    const onRequest = (request: import('playwright-core').Request) => {
      if (request.method() === 'POST' && request.url().endsWith('/v1/jobs')) posted.push(request.postDataJSON() as Record<string, unknown>);
    };
    page.on('request', onRequest);
    const finish = async () => {
      const previous = await page.locator('#current-id').textContent();
      await page.click('#submit');
      await expect.poll(() => page.locator('#current-id').textContent(), { timeout: 20_000 }).not.toBe(previous);
      await expect.poll(() => page.locator('#current-status').textContent(), { timeout: 50_000 }).toBe('succeeded');
    };
    try {
      await page.reload();
      await page.fill('#prompt', 'a red barn in a field');
      await page.fill('#num_images', '2');
      await page.fill('#num_inference_steps', '2');
      await page.fill('#seed', '77');
      // The model's default filters: the toggles are off limits until that is unticked.
      expect(await page.locator('#filters-default').isChecked()).toBe(true);
      expect(await page.locator('#filter-grayscale').isDisabled()).toBe(true);
      await page.uncheck('#filters-default');
      await page.check('#filter-nsfw');
      await page.check('#filter-grayscale');
      await page.check('#prompt_variations');
      await finish();
      expect(posted.at(-1)).toMatchObject({ prompt: 'a red barn in a field', num_images: 2, filters: ['nsfw', 'grayscale'], prompt_variations: true });

      await expect.poll(() => page.locator('#images .image-prompt').count()).toBe(2);
      const prompts = await page.locator('#images .image-prompt').allTextContents();
      expect(new Set(prompts).size).toBe(2);
      for (const prompt of prompts) expect(prompt.startsWith('a red barn in a field, ')).toBe(true);
      const verdicts = await page.locator('#images .verdict').evaluateAll((els) => els.map((el) => [(el as HTMLElement).dataset.filter, el.className, el.textContent]));
      expect(verdicts).toHaveLength(4);
      for (const [filter, className, text] of verdicts) {
        expect(className).toBe('verdict pass');
        expect(text).toMatch(filter === 'grayscale' ? /^grayscale: passed \(\d+\)$/ : /^nsfw: passed$/);
      }

      // Back to the model's default: no filters named, no variations, the checker's verdict shown.
      await page.check('#filters-default');
      await page.uncheck('#prompt_variations');
      await page.fill('#num_images', '1');
      await finish();
      expect(posted.at(-1)).not.toHaveProperty('filters');
      expect(posted.at(-1)).not.toHaveProperty('prompt_variations');
      await expect.poll(() => page.locator('#images .verdict').allTextContents()).toEqual(['nsfw: passed']);
      expect(await page.locator('#images .image-prompt').textContent()).toBe('a red barn in a field');
      expect(consoleErrors).toEqual([]);
    } finally {
      page.off('request', onRequest);
    }
  });

  it('shows the reason, naming the field, when the API refuses the request', async () => {
    await page.fill('#prompt', 'too big');
    await page.fill('#width', '100');
    await page.click('#submit');
    await expect.poll(() => page.locator('#form-error').textContent()).toMatch(/width must be a multiple of 8 \(width\)/);
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('width');
  });

  it('asks for the key when the stored one is refused', async () => {
    await page.evaluate(() => localStorage.setItem('sdjobs.apiKey', 'not-a-valid-key-at-all'));
    await page.reload();
    await page.evaluate(() => ((document.getElementById('key-panel') as HTMLDetailsElement).open = false));
    await page.fill('#prompt', 'no entry');
    await page.click('#submit');
    await expect.poll(() => page.locator('#form-error').textContent()).toMatch(/API key is not valid/);
    expect(await page.locator('#key-panel').getAttribute('open')).not.toBeNull();
  });
});
