/**
 * How exact is the safety checker's preprocessing? Compares, on the reference cases of
 * test/fixtures/clip-preprocess-reference.json (Pillow 9.4 + numpy, transformers'
 * CLIPImageProcessor steps), the 8-bit resize-and-crop and the float pixel_values of
 *   - this service's resize (Pillow's resampling written again, worker/pipeline/clip-image-processor.ts)
 *   - libvips through sharp: resize to the same size (fit "fill") with each of its kernels, same crop
 * and prints the largest differences and the time per image. Measures, asserts nothing.
 *
 *   npm run bench:clip-preprocess
 */
import sharp from 'sharp';
import { ClipImageProcessor, parsePreprocessorConfig, type Rgb8 } from '../worker/pipeline/clip-image-processor.js';
import { maxAbsDiff, readClipReference, referenceCrop, referenceInput, referencePixelValues } from '../test/helpers/clip-reference.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const reference = readClipReference();
const processor = new ClipImageProcessor(parsePreprocessorConfig(reference.preprocessor));

type Method = { name: string; crop(input: Rgb8, resized: [number, number], crop: [number, number, number, number]): Promise<Rgb8> };

const methods: Method[] = [
  { name: 'pillow-compatible (ours)', crop: async (input) => processor.resizeAndCrop(input) },
  ...(['cubic', 'mitchell', 'lanczos3'] as const).map(
    (kernel): Method => ({
      name: `sharp ${kernel}`,
      crop: async (input, [rw, rh], [left, top, width, height]) => {
        const { data } = await sharp(Buffer.from(input.data), { raw: { width: input.width, height: input.height, channels: 3 } })
          .resize(rw, rh, { fit: 'fill', kernel })
          .extract({ left, top, width, height })
          .raw()
          .toBuffer({ resolveWithObject: true });
        return { width, height, data: new Uint8Array(data) };
      },
    }),
  ),
];

console.log(`reference: Pillow ${reference.pillow}, numpy ${reference.numpy}; ${RUNS} timed runs per image\n`);
console.log(['method', 'case', 'max |Δ| 8-bit', 'pixels differing', 'max |Δ| pixel_values', 'ms / image'].join('\t'));
for (const method of methods) {
  for (const c of reference.cases) {
    const input = referenceInput(c.width, c.height);
    const want = await referenceCrop(c);
    const got = await method.crop(input, c.resized, c.crop);
    let differing = 0;
    for (let i = 0; i < got.data.length; i++) if (got.data[i] !== want.data[i]) differing++;
    const values = maxAbsDiff(referencePixelValues(got, reference.normalized_levels), referencePixelValues(want, reference.normalized_levels));
    const start = performance.now();
    for (let r = 0; r < RUNS; r++) await method.crop(input, c.resized, c.crop);
    const ms = (performance.now() - start) / RUNS;
    console.log(
      [method.name, `${c.name} → ${c.resized.join('×')}`, maxAbsDiff(got.data, want.data), `${((100 * differing) / got.data.length).toFixed(1)} %`, values.toFixed(4), ms.toFixed(2)].join('\t'),
    );
  }
}
