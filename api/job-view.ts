import type { JobRecord } from '../shared/job-queue.js';

/** The job as clients see it (`GET /v1/jobs/:id`); snake_case like the request. */
export function jobView(record: JobRecord, baseUrl: string) {
  const p = record.payload;
  const self = `${baseUrl}/v1/jobs/${record.id}`;
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return {
    id: record.id,
    status: record.status,
    model: p.model,
    input: {
      prompt: p.prompt,
      negative_prompt: p.negativePrompt,
      width: p.width,
      height: p.height,
      num_inference_steps: p.numInferenceSteps,
      guidance_scale: p.guidanceScale,
      seed: p.seed,
      num_images: p.numImages,
      scheduler: p.scheduler ?? null,
    },
    progress: record.progress,
    queue_position: record.queuePosition,
    attempts: { made: record.attemptsMade, max: record.maxAttempts },
    created_at: iso(record.createdAt),
    started_at: iso(record.startedAt),
    finished_at: iso(record.finishedAt),
    outputs: record.result
      ? {
          seed: record.result.seed,
          images: record.result.images.map((image, index) => ({
            url: `${self}/images/${index}.png`,
            width: image.width,
            height: image.height,
            seed: image.seed,
          })),
        }
      : null,
    error: record.error,
    links: { self },
  };
}

export type JobView = ReturnType<typeof jobView>;
