/**
 * The image formats a job may ask for (`output_format`), as the API validates them, the worker
 * encodes them and storage names them: a stored image's key ends in its format's extension, and
 * that extension is what tells the image's media type later.
 */

export const OUTPUT_FORMATS = ['png', 'webp', 'jpeg'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export const OUTPUT_MEDIA: Readonly<Record<OutputFormat, { extension: string; contentType: string }>> = {
  png: { extension: 'png', contentType: 'image/png' },
  webp: { extension: 'webp', contentType: 'image/webp' },
  jpeg: { extension: 'jpg', contentType: 'image/jpeg' },
};

/** `output_quality` when webp or jpeg is asked for without one (Replicate's and sharp's default). */
export const DEFAULT_OUTPUT_QUALITY = 80;

/** The file extension of a key or file name (`jobs/<id>/0.webp` → `webp`); '' without one. */
export function extensionOf(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot > name.lastIndexOf('/') ? name.slice(dot + 1).toLowerCase() : '';
}

/** The media type a stored image's name says it holds; undefined for an extension we never write. */
export function contentTypeOf(name: string): string | undefined {
  const extension = extensionOf(name);
  return Object.values(OUTPUT_MEDIA).find((m) => m.extension === extension)?.contentType;
}
