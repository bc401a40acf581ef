/**
 * A small HTTP client for the job API, for the command line: submit, follow (server-sent events,
 * or polling where the stream is not there), download. Only `fetch`; no service code.
 */

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled' | 'expired';

export interface JobView {
  id: string;
  status: JobStatus;
  /** The model the job runs on, and why (`explicit`, `default`, `trigger word "…"`). */
  model?: string;
  routed_by?: string | null;
  input: { prompt: string; width: number; height: number; num_inference_steps: number; seed: number };
  progress: { step: number; total: number } | null;
  queue_position: number | null;
  outputs: { seed: number; images: { url: string; width: number; height: number; seed: number }[] } | null;
  error: { code: string; message: string } | null;
  links: { self: string };
}

export const isFinal = (status: string) => status === 'succeeded' || status === 'failed' || status === 'canceled' || status === 'expired';

/** The server could not be reached at all (refused, DNS, timeout): nothing was submitted. */
export class UnreachableError extends Error {
  constructor(url: string, cause: unknown) {
    const reason = describeNetworkError(cause);
    super(`cannot reach the server at ${url} (${reason}); is it running? Start it with \`npm start\` or pass --url.`);
    this.name = 'UnreachableError';
  }
}

/** The server answered with an error (bad input, bad key, overloaded). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

function describeNetworkError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  if (cause?.code) return cause.code;
  if (err instanceof Error && err.name === 'TimeoutError') return 'timed out';
  return cause?.message ?? (err instanceof Error ? err.message : String(err));
}

export interface ClientOptions {
  baseUrl: string;
  apiKey?: string | undefined;
  pollMs?: number;
}

export class JobClient {
  private readonly base: string;

  constructor(private readonly options: ClientOptions) {
    this.base = options.baseUrl.replace(/\/+$/, '');
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.options.apiKey ? { Authorization: `Bearer ${this.options.apiKey}` } : {}), ...extra };
  }

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    const url = path.startsWith('http') ? path : `${this.base}${path}`;
    try {
      return await fetch(url, { ...init, headers: this.headers(init.headers as Record<string, string> | undefined) });
    } catch (err) {
      if ((err as Error)?.name === 'AbortError') throw err;
      throw new UnreachableError(this.base, err);
    }
  }

  private async json<T>(res: Response): Promise<T> {
    const body = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string; field?: string } } | null;
    if (!res.ok) {
      const error = body?.error;
      const message = error?.message ?? `HTTP ${res.status} ${res.statusText}`;
      throw new ApiError(res.status, error?.code ?? 'http_error', message);
    }
    return body as T;
  }

  async submit(request: Record<string, unknown>): Promise<JobView> {
    const res = await this.request('/v1/jobs', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(request),
    });
    return this.json<JobView>(res);
  }

  async get(id: string, signal?: AbortSignal): Promise<JobView> {
    return this.json<JobView>(await this.request(`/v1/jobs/${encodeURIComponent(id)}`, signal ? { signal } : {}));
  }

  /** Calls `onUpdate` with each new view of the job and resolves with the final one. */
  async follow(job: JobView, onUpdate: (job: JobView) => void, signal?: AbortSignal): Promise<JobView> {
    onUpdate(job);
    if (isFinal(job.status)) return job;
    const streamed = await this.stream(job.id, onUpdate, signal);
    if (streamed) return streamed;
    return this.poll(job.id, onUpdate, signal);
  }

  /** GET /v1/jobs/:id/events; null when the server has no stream or it broke off (then poll). */
  private async stream(id: string, onUpdate: (job: JobView) => void, signal?: AbortSignal): Promise<JobView | null> {
    let res: Response;
    try {
      res = await this.request(`/v1/jobs/${encodeURIComponent(id)}/events`, {
        headers: { Accept: 'text/event-stream' },
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      if (err instanceof UnreachableError) return null;
      throw err;
    }
    if (!res.ok || !(res.headers.get('content-type') ?? '').startsWith('text/event-stream') || !res.body) {
      await res.body?.cancel().catch(() => undefined);
      return null;
    }
    try {
      for await (const event of readEvents(res.body)) {
        let job: JobView;
        try {
          job = JSON.parse(event.data) as JobView;
        } catch {
          continue;
        }
        if (!job || typeof job.status !== 'string') continue;
        onUpdate(job);
        if (isFinal(job.status)) return job;
      }
    } catch (err) {
      if ((err as Error)?.name === 'AbortError' && signal?.aborted) throw err;
    }
    return null;
  }

  private async poll(id: string, onUpdate: (job: JobView) => void, signal?: AbortSignal): Promise<JobView> {
    const interval = this.options.pollMs ?? 500;
    for (;;) {
      const job = await this.get(id, signal);
      onUpdate(job);
      if (isFinal(job.status)) return job;
      await new Promise((resolve) => setTimeout(resolve, interval));
      signal?.throwIfAborted();
    }
  }

  async download(url: string): Promise<Buffer> {
    const res = await this.request(url);
    if (!res.ok) {
      await this.json(res);
    }
    return Buffer.from(await res.arrayBuffer());
  }
}

export interface ServerSentEvent {
  event: string;
  data: string;
}

/** Parses a text/event-stream body (the WHATWG rules: `event:`, multi-line `data:`, blank line ends). */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let event = 'message';
  let data: string[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A lone CR at the end may be the first half of a CRLF split across chunks.
      if (buffer[newline] === '\r' && newline === buffer.length - 1) break;
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
      if (line === '') {
        if (data.length > 0) yield { event, data: data.join('\n') };
        event = 'message';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
  }
}
