/**
 * Output encoding: time against bytes for sharp's PNG settings (zlib compression level, adaptive
 * filtering; `effort` shown to act only with palette quantisation, which is lossy and stays off)
 * and for the WebP and JPEG outputs, at 512 and 1024 px, on pictures that compress like generated
 * ones (`natural-image.ts`: a smooth one and a grainy one). A benchmark, not a test: it prints
 * figures and asserts nothing; the README's "Output formats" table comes from it.
 *
 *   npm run bench:encoding
 *   BENCH_SIZES=512 BENCH_RUNS=15 BENCH_FORMATS=png npm run bench:encoding
 *
 * Each figure is the median of BENCH_RUNS encodes (default 7) after one warm-up, with sharp's
 * default thread pool, as in the worker.
 */
import os from 'node:os';
import sharp, { type JpegOptions, type PngOptions, type WebpOptions } from 'sharp';
import { encodeImage, OUTPUT_DEFAULTS } from '../worker/image-encoding.js';
import { naturalImage, type Texture } from './natural-image.js';

const SIZES = (process.env['BENCH_SIZES'] ?? '512,1024').split(',').map(Number);
const RUNS = Number(process.env['BENCH_RUNS'] ?? 7);
const TEXTURES: Texture[] = ['smooth', 'grainy'];
const FORMATS = (process.env['BENCH_FORMATS'] ?? 'png,webp,jpeg').split(',');

type Setting =
  | { label: string; format: 'png'; options: PngOptions }
  | { label: string; format: 'webp'; options: WebpOptions }
  | { label: string; format: 'jpeg'; options: JpegOptions };

const SETTINGS: Setting[] = [
  ...[0, 1, 2, 3, 4, 5, 6, 7, 9].flatMap((level) =>
    [false, true].map((adaptiveFiltering): Setting => ({
      label: `png level ${level}${adaptiveFiltering ? ', adaptive filtering' : ''}`,
      format: 'png',
      options: { compressionLevel: level, adaptiveFiltering, palette: false },
    })),
  ),
  { label: 'png level 6, palette off, effort 10', format: 'png', options: { compressionLevel: 6, palette: false, effort: 10 } },
  { label: 'png palette (lossy), effort 1', format: 'png', options: { compressionLevel: 6, palette: true, effort: 1 } },
  { label: 'png palette (lossy), effort 10', format: 'png', options: { compressionLevel: 6, palette: true, effort: 10 } },
  { label: 'webp quality 80, effort 4', format: 'webp', options: { quality: 80, effort: 4 } },
  { label: 'webp quality 80, effort 2', format: 'webp', options: { quality: 80, effort: 2 } },
  { label: 'webp quality 90, effort 4', format: 'webp', options: { quality: 90, effort: 4 } },
  { label: 'jpeg quality 80', format: 'jpeg', options: { quality: 80 } },
  { label: 'jpeg quality 90', format: 'jpeg', options: { quality: 90 } },
  { label: 'jpeg quality 90, mozjpeg', format: 'jpeg', options: { quality: 90, mozjpeg: true } },
];

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
};

async function encode(raw: Buffer, size: number, setting: Setting): Promise<Buffer> {
  const image = sharp(raw, { raw: { width: size, height: size, channels: 3 } });
  if (setting.format === 'png') return image.png(setting.options).toBuffer();
  if (setting.format === 'webp') return image.webp(setting.options).toBuffer();
  return image.jpeg(setting.options).toBuffer();
}

async function time(run: () => Promise<Buffer>, runs = RUNS): Promise<{ ms: number; bytes: number; out: Buffer }> {
  let out = await run();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    out = await run();
    times.push(performance.now() - started);
  }
  return { ms: median(times), bytes: out.length, out };
}

async function main(): Promise<void> {
  console.log(`sharp ${sharp.versions.sharp}, libvips ${sharp.versions.vips}; median of ${RUNS}; ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  for (const size of SIZES) {
    for (const texture of TEXTURES) {
      const raw = Buffer.from(naturalImage(size, size, texture));
      console.log(`\n${size}×${size}, ${texture} picture (raw ${(raw.length / 1024).toFixed(0)} KB)`);
      console.log(`  ${'setting'.padEnd(40)}${'ms'.padStart(8)}${'KB'.padStart(8)}${'× raw'.padStart(8)}`);
      const baseline = await encode(raw, size, SETTINGS.find((s) => s.label === 'png level 6')!);
      for (const setting of SETTINGS.filter((s) => FORMATS.includes(s.format))) {
        // Palette quantisation takes seconds at 1024 px and is shown for reference only: three runs.
        const palette = setting.format === 'png' && setting.options.palette === true;
        const { ms, bytes, out } = await time(() => encode(raw, size, setting), palette ? Math.min(RUNS, 3) : RUNS);
        const same = setting.format === 'png' && setting.options.effort !== undefined && !palette ? (out.equals(baseline) ? '  (same bytes as level 6)' : '  (differs from level 6)') : '';
        console.log(`  ${setting.label.padEnd(40)}${ms.toFixed(1).padStart(8)}${(bytes / 1024).toFixed(0).padStart(8)}${(bytes / raw.length).toFixed(3).padStart(8)}${same}`);
      }
      // What the worker does with no output_format: the service's default.
      const { ms, bytes } = await time(async () => (await encodeImage({ width: size, height: size, data: raw, seed: 0 }, { format: 'png' })).bytes);
      console.log(`  ${`service default (png ${JSON.stringify(OUTPUT_DEFAULTS.png)})`.padEnd(40)}${ms.toFixed(1).padStart(8)}${(bytes / 1024).toFixed(0).padStart(8)}${(bytes / raw.length).toFixed(3).padStart(8)}`);
    }
  }
}

void main();
