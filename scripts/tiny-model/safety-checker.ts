/**
 * A tiny stand-in for diffusers' StableDiffusionSafetyChecker as its ONNX export runs it
 * (`forward_onnx`, exported with inputs `clip_input`, `images` and outputs `out_images`,
 * `has_nsfw_concepts`): a one-layer "vision model" (16×16 patch embedding, mean pool, tanh) and a
 * projection give image embeddings; their cosine similarities to 17 concept and 3 special-care
 * embeddings minus per-concept thresholds decide, as in diffusers:
 *
 *   special_care = any(special_cos − special_w > 0);   adjustment = 0.01 · special_care
 *   has_nsfw     = any(cos − concept_w + adjustment > 0);   out_images = has_nsfw ? 0 : images
 *
 * Cosines lie in [−1, 1], so the thresholds choose the behaviour outright: `pass-all` (1.5) flags
 * nothing, `flag-all` (−1.5) flags every image. The feature extractor's preprocessing
 * (`feature_extractor/preprocessor_config.json`) is that of the real checker: 224×224 crops.
 */
import { attr, dataTypeOf, GraphBuilder, type Dim, type FloatType } from './graph-builder.js';
import { uniformWeights } from './prng.js';

export type SafetyCheckerKind = 'pass-all' | 'flag-all';

/** The real checker's CLIP ViT-L/14 takes 224×224 crops; patches are coarser here. */
export const CLIP_IMAGE_SIZE = 224;
const PATCH = 16;
const VISION_WIDTH = 8;
const PROJECTION_DIM = 16;
const CONCEPTS = 17;
const SPECIAL_CARE = 3;
const THRESHOLD: Record<SafetyCheckerKind, number> = { 'pass-all': 1.5, 'flag-all': -1.5 };

export interface SafetyCheckerOptions {
  float: FloatType;
  kind: SafetyCheckerKind;
  batch: Dim;
  seed: number;
}

/** Rows of `values` ([rows, dim]) scaled to unit length, then transposed to [dim, rows]. */
function unitColumns(values: Float32Array, rows: number, dim: number): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let norm = 0;
    for (let d = 0; d < dim; d++) norm += values[r * dim + d]! ** 2;
    norm = Math.sqrt(norm) || 1;
    for (let d = 0; d < dim; d++) out[d * rows + r] = values[r * dim + d]! / norm;
  }
  return out;
}

export function buildSafetyChecker(o: SafetyCheckerOptions): GraphBuilder {
  const b = new GraphBuilder('safety_checker', { float: o.float, seed: o.seed });
  // The dynamic axes of diffusers' convert_stable_diffusion_checkpoint_to_onnx.py.
  const clipInput = b.input('clip_input', o.float, [o.batch, 'channels', 'height', 'width']);
  const images = b.input('images', o.float, [o.batch, 'height', 'width', 'channels']);

  const pooled = b.scope('vision_model', () => {
    const embed = b.scope('embeddings.patch_embedding', () =>
      b.op(
        'Conv',
        [clipInput, b.weight('weight', [VISION_WIDTH, 3, PATCH, PATCH], 1 / Math.sqrt(3 * PATCH * PATCH)), b.weight('bias', [VISION_WIDTH], 0.02)],
        { kernel_shape: attr.ints([PATCH, PATCH]), strides: attr.ints([PATCH, PATCH]), pads: attr.ints([0, 0, 0, 0]) },
      ),
    );
    const mean = b.op('ReduceMean', [embed], { axes: attr.ints([2, 3]), keepdims: attr.int(0) });
    return b.op('Tanh', [mean]);
  });
  const imageEmbeds = b.scope('visual_projection', () => b.op('MatMul', [pooled, b.weight('weight', [VISION_WIDTH, PROJECTION_DIM], 1)]));

  // cosine_distance: unit image embeddings against unit concept embeddings.
  const norm = b.op('Max', [b.op('ReduceL2', [imageEmbeds], { axes: attr.ints([1]), keepdims: attr.int(1) }), b.scalar('eps', 1e-6)]);
  const unit = b.op('Div', [imageEmbeds, norm]);
  const embeddings = (label: string, rows: number) =>
    b.floatConstant(label, [PROJECTION_DIM, rows], unitColumns(uniformWeights(o.seed, `safety_checker:${label}`, rows * PROJECTION_DIM, 1), rows, PROJECTION_DIM));
  const threshold = THRESHOLD[o.kind];
  const zero = b.scalar('zero', 0);

  const specialScores = b.op('Sub', [b.op('MatMul', [unit, embeddings('special_care_embeds', SPECIAL_CARE)]), b.filled('special_care_embeds_weights', [SPECIAL_CARE], threshold)]);
  const specialCare = b.op('ReduceMax', [b.op('Cast', [b.op('Greater', [specialScores, zero])], { to: attr.int(dataTypeOf(o.float)) })], {
    axes: attr.ints([1]),
    keepdims: attr.int(1),
  });
  const adjustment = b.op('Mul', [specialCare, b.scalar('special_adjustment', 0.01)]);
  const conceptScores = b.op('Add', [
    b.op('Sub', [b.op('MatMul', [unit, embeddings('concept_embeds', CONCEPTS)]), b.filled('concept_embeds_weights', [CONCEPTS], threshold)]),
    adjustment,
  ]);
  const worst = b.op('ReduceMax', [conceptScores], { axes: attr.ints([1]), keepdims: attr.int(0) });
  const hasNsfw = b.op('Greater', [worst, zero], {}, 'has_nsfw_concepts');

  // images[has_nsfw_concepts] = 0.0
  const mask = b.op('Reshape', [hasNsfw, b.int64s('mask_shape', [-1, 1, 1, 1])]);
  b.op('Where', [mask, zero, images], {}, 'out_images');

  b.output('out_images', o.float, [o.batch, 'height', 'width', 'channels']);
  b.output('has_nsfw_concepts', 'bool', [o.batch]);
  return b;
}

/** transformers' CLIPImageProcessor settings of SD 1.x's feature_extractor (OpenAI CLIP statistics). */
export function preprocessorConfig() {
  return {
    crop_size: { height: CLIP_IMAGE_SIZE, width: CLIP_IMAGE_SIZE },
    do_center_crop: true,
    do_convert_rgb: true,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    feature_extractor_type: 'CLIPFeatureExtractor',
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_processor_type: 'CLIPImageProcessor',
    image_std: [0.26862954, 0.26130258, 0.27577711],
    resample: 3,
    rescale_factor: 0.00392156862745098,
    size: { shortest_edge: CLIP_IMAGE_SIZE },
  };
}
