#!/usr/bin/python3
"""Reference values for the safety checker's image preprocessing (test/fixtures/clip-preprocess-reference.json).

Runs transformers' CLIPImageProcessor steps, as diffusers' OnnxStableDiffusionPipeline feeds its
safety checker, with PIL and numpy only (PyPI is out of reach here; Debian's python3-pil and
python3-numpy are enough):

  PIL image (uint8 RGB) → resize, shortest edge to 224, PIL bicubic (resample=3, reducing_gap=None)
  → center crop 224×224 (top = (H − 224) // 2, left = (W − 224) // 2)
  → rescale: (x.astype(float64) * (1/255)).astype(float32)
  → normalize: (x − mean) / std in float32 (mean and std as float32 arrays)
  → channels first.

The input images are computed from integer formulas that test/clip-image-processor.test.ts
repeats, so only the outputs are stored: each resized-and-cropped image as a PNG (base64), the
normalised value of every 8-bit level per channel (the float path is per-pixel and exact, so
level → value is the whole story after the crop), and SHA-256 digests of the final float32 and
float16 pixel_values.

Usage (Debian's interpreter, where apt put PIL and numpy):
  /usr/bin/python3 scripts/reference/clip-preprocess-reference.py > test/fixtures/clip-preprocess-reference.json
"""
import base64
import hashlib
import io
import json
import sys

import numpy as np
import PIL
from PIL import Image

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
SHORTEST_EDGE = 224
CROP = 224
RESCALE = 0.00392156862745098  # what preprocessor_config.json stores for 1/255

# (name, width, height): the tiny model's sizes, SD 1.x/2.x sizes, an odd aspect, a no-op resize.
CASES = [
    ("tiny-64x64", 64, 64),
    ("tiny-96x64", 96, 64),
    ("sd-512x512", 512, 512),
    ("sd-512x768", 512, 768),
    ("odd-300x200", 300, 200),
    ("same-224x224", 224, 224),
]


def test_image(width, height):
    """Gradients in R and G; B: hashed noise (top left), a checkerboard (bottom right), smooth elsewhere."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    for y in range(height):
        for x in range(width):
            r = (x * 255) // max(1, width - 1)
            g = (y * 255) // max(1, height - 1)
            h = ((x * 73856093) ^ (y * 19349663)) & 0xFFFFFFFF
            h = (h * 2654435761) & 0xFFFFFFFF
            if x < width // 2 and y < height // 2:
                b = h >> 24
            elif x >= width // 2 and y >= height // 2:
                b = 255 if ((x // 8) + (y // 8)) % 2 == 0 else 0
            else:
                b = (r + g) // 2
            img[y, x] = (r, g, b)
    return img


def resized_size(width, height):
    """transformers' get_resize_output_image_size(default_to_square=False): short side → 224."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = SHORTEST_EDGE, int(SHORTEST_EDGE * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def main():
    mean = np.array(MEAN, dtype=np.float32)
    std = np.array(STD, dtype=np.float32)
    levels = np.arange(256, dtype=np.uint8)
    rescaled_levels = (levels.astype(np.float64) * RESCALE).astype(np.float32)
    lut = [[float(v) for v in (rescaled_levels - mean[c]) / std[c]] for c in range(3)]

    cases = []
    for name, width, height in CASES:
        pixels = test_image(width, height)
        rw, rh = resized_size(width, height)
        resized = np.array(Image.fromarray(pixels).resize((rw, rh), resample=Image.BICUBIC, reducing_gap=None))
        top, left = (rh - CROP) // 2, (rw - CROP) // 2
        crop = resized[top : top + CROP, left : left + CROP]
        rescaled = (crop.astype(np.float64) * RESCALE).astype(np.float32)
        values = ((rescaled - mean) / std).transpose(2, 0, 1)
        assert values.dtype == np.float32
        png = io.BytesIO()
        Image.fromarray(crop).save(png, format="PNG", optimize=True)
        cases.append(
            {
                "name": name,
                "width": width,
                "height": height,
                "resized": [rw, rh],
                "crop": [left, top, CROP, CROP],
                "crop_png_base64": base64.b64encode(png.getvalue()).decode("ascii"),
                "pixel_values_float32_sha256": hashlib.sha256(np.ascontiguousarray(values).astype("<f4").tobytes()).hexdigest(),
                "pixel_values_float16_sha256": hashlib.sha256(np.ascontiguousarray(values).astype("<f2").tobytes()).hexdigest(),
            }
        )

    json.dump(
        {
            "generator": "scripts/reference/clip-preprocess-reference.py",
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "preprocessor": {
                "size": {"shortest_edge": SHORTEST_EDGE},
                "crop_size": {"height": CROP, "width": CROP},
                "resample": 3,
                "rescale_factor": RESCALE,
                "image_mean": MEAN,
                "image_std": STD,
            },
            "normalized_levels": lut,
            "cases": cases,
        },
        sys.stdout,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
