/**
 * The Node.js flags the API process runs with wherever it is deployed (the image's CMD, compose,
 * Kubernetes; `npm run bench:system` starts it the same way, and a test keeps them in step).
 *
 * Under a burst of submissions the API's old generation fills with requests that outlived two
 * young-generation collections; left to its default limit (a share of the machine's memory) V8
 * lets that garbage pile up before a full collection, and the RSS climbs past 180 MB for a live
 * heap of about 26 MB. A 192 MB old-space limit makes V8 collect it early: about 137 MB after
 * 10 s of POSTs at 50 connections, at no measurable CPU cost per request (docs/performance.md).
 * It is 7 times the live heap; SSE streams and waiting clients cost a few kilobytes each.
 */
export const API_NODE_FLAGS = ['--max-old-space-size=192'] as const;
