// The playground: submit a job, follow it (server-sent events, or polling where the stream is not
// available), show its images. Plain browser JavaScript; talks only to this origin.

const FINAL = new Set(['succeeded', 'failed', 'canceled', 'expired']);
const JOBS_KEY = 'sdjobs.jobs';
const KEY_KEY = 'sdjobs.apiKey';
const MAX_REMEMBERED = 50;
const POLL_MS = 500;

const $ = (id) => document.getElementById(id);
const form = $('job-form');
const fields = ['prompt', 'negative_prompt', 'width', 'height', 'num_images', 'num_inference_steps', 'guidance_scale', 'seed', 'scheduler', 'model'];

let following = null; // AbortController of the job on screen
const objectUrls = [];

// ---- API access -----------------------------------------------------------------------------

function authHeaders() {
  const key = localStorage.getItem(KEY_KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e ? `${e.message}${e.field ? ` (${e.field})` : ''}` : `HTTP ${status}`);
    this.status = status;
    this.code = e ? e.code : undefined;
  }
}

async function api(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { Accept: 'application/json', ...authHeaders(), ...init.headers } });
  const body = await res.json().catch(() => null);
  if (res.status === 401 || res.status === 403) askForKey();
  if (!res.ok && res.status !== 202) throw new ApiError(res.status, body);
  return body;
}

function askForKey() {
  $('key-panel').open = true;
  $('api-key').focus();
}

// ---- Settings from the OpenAPI document (limits, schedulers, model) -------------------------

async function loadSchema() {
  try {
    const doc = await api('/openapi.json');
    const request = doc.components.schemas.GenerationRequest;
    const props = request.properties;
    const limit = (name, input) => {
      const p = props[name];
      if (!p) return;
      if (p.minimum !== undefined) input.min = p.minimum;
      if (p.maximum !== undefined) input.max = p.maximum;
      if (p.default !== undefined && input.value === '') input.placeholder = String(p.default);
    };
    for (const name of ['width', 'height', 'num_images', 'num_inference_steps', 'guidance_scale', 'seed']) limit(name, $(name));
    for (const scheduler of props.scheduler?.enum ?? []) {
      if (/^[a-z_0-9]+$/.test(scheduler)) $('scheduler').append(new Option(scheduler, scheduler));
    }
    keysRequired = Boolean(doc.security?.length || Object.keys(doc.components.securitySchemes ?? {}).length);
    if (keysRequired) $('key-panel').open = !localStorage.getItem(KEY_KEY);
  } catch (err) {
    showFormError(`Could not read the API description: ${err.message}`);
  }
}

// ---- The model picker, from GET /v1/models ----------------------------------------------------

let keysRequired = false;

async function loadModels() {
  // Without a key where one is required, the list waits for it (no refused request in the console).
  if (keysRequired && !localStorage.getItem(KEY_KEY)) return;
  try {
    const { models } = await api('/v1/models');
    const picker = $('model');
    const chosen = picker.value;
    while (picker.options.length > 1) picker.remove(1);
    for (const model of models) {
      const words = model.trigger_words.length > 0 ? ` (trigger: ${model.trigger_words.join(', ')})` : '';
      const option = new Option(`${model.name}${model.default ? ' (default)' : ''}${words}`, model.name);
      option.title = `${model.state}; ${model.load ? `${model.load.queued} queued, ${model.load.running} running` : 'load unknown'}`;
      picker.append(option);
    }
    picker.value = models.some((m) => m.name === chosen) ? chosen : '';
  } catch {
    // Left on "auto": the service routes by the prompt's trigger words.
  }
}

// ---- The form ---------------------------------------------------------------------------------

function readRequest() {
  const body = {};
  for (const name of fields) {
    const input = $(name);
    const raw = input.value.trim();
    if (raw === '') continue;
    body[name] = input.type === 'number' ? Number(raw) : raw;
  }
  // Left on "the model's default", the request names no filters; otherwise exactly the ticked ones.
  if (!$('filters-default').checked) body.filters = [...document.querySelectorAll('input[name="filter"]:checked')].map((box) => box.value);
  if ($('prompt_variations').checked) body.prompt_variations = true;
  return body;
}

function syncFilterToggles() {
  const own = !$('filters-default').checked;
  for (const box of document.querySelectorAll('input[name="filter"]')) box.disabled = !own;
}
$('filters-default').addEventListener('change', syncFilterToggles);
syncFilterToggles();

function showFormError(message) {
  const el = $('form-error');
  el.textContent = message;
  el.hidden = !message;
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  showFormError('');
  const body = readRequest();
  if (!body.prompt) {
    showFormError('Write a prompt first.');
    $('prompt').focus();
    return;
  }
  $('submit').disabled = true;
  try {
    const job = await api('/v1/jobs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    remember(job);
    void follow(job);
  } catch (err) {
    showFormError(err.message);
    if (err.status === 400 && err.code === 'invalid_request') {
      const field = /\((\w+)\)$/.exec(err.message)?.[1];
      if (field && $(field)) $(field).focus();
    }
  } finally {
    $('submit').disabled = false;
  }
});

$('api-key').value = localStorage.getItem(KEY_KEY) ?? '';
$('api-key').addEventListener('change', (e) => {
  const key = e.target.value.trim();
  if (key) localStorage.setItem(KEY_KEY, key);
  else localStorage.removeItem(KEY_KEY);
  if (key) void loadModels();
});

// ---- Following a job --------------------------------------------------------------------------

async function follow(job) {
  following?.abort();
  const controller = new AbortController();
  following = controller;
  showJob(job);
  if (FINAL.has(job.status)) return;
  try {
    const final = (await streamEvents(job.id, controller.signal)) ?? (await poll(job.id, controller.signal));
    if (final) remember(final);
  } catch (err) {
    if (!controller.signal.aborted) showJobError(err.message);
  }
}

/**
 * Reads GET /v1/jobs/:id/events with fetch (EventSource cannot send the Authorization header).
 * Resolves with the final job, or null when there is no stream to read (then the caller polls).
 */
async function streamEvents(id, signal) {
  let res;
  try {
    res = await fetch(`/v1/jobs/${id}/events`, { headers: { Accept: 'text/event-stream', ...authHeaders() }, signal });
  } catch {
    return null;
  }
  if (!res.ok || !(res.headers.get('content-type') ?? '').startsWith('text/event-stream') || !res.body) return null;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return null;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = parseEvent(block);
        if (!event || !event.data) continue;
        let job;
        try {
          job = JSON.parse(event.data);
        } catch {
          continue;
        }
        if (!job || typeof job !== 'object' || !job.status) continue;
        showJob(job);
        if (FINAL.has(job.status)) return job;
      }
    }
  } catch {
    // A dropped stream: polling finishes the job.
    return null;
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseEvent(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
  }
  return { name, data: data.join('\n') };
}

async function poll(id, signal) {
  while (!signal.aborted) {
    const job = await api(`/v1/jobs/${id}`, { signal });
    showJob(job);
    if (FINAL.has(job.status)) return job;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return null;
}

// ---- Showing a job ----------------------------------------------------------------------------

let shownId = null;
let shownImages = null;

function showJob(job) {
  $('empty').hidden = true;
  $('current').hidden = false;
  if (shownId !== job.id) {
    shownId = job.id;
    shownImages = null;
    $('images').replaceChildren();
    for (const url of objectUrls.splice(0)) URL.revokeObjectURL(url);
  }
  const status = $('current-status');
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  $('current-id').textContent = job.id;
  $('current-prompt').textContent = job.input?.prompt ?? '';
  $('current-model').textContent = job.model ? `${job.model}${job.routed_by ? ` · ${job.routed_by}` : ''}` : '';
  const progress = $('current-progress');
  const total = job.progress?.total ?? job.input?.num_inference_steps ?? 1;
  const step = job.status === 'succeeded' ? total : (job.progress?.step ?? 0);
  progress.max = total;
  progress.value = step;
  $('current-detail').textContent =
    job.status === 'queued'
      ? job.queue_position === null || job.queue_position === undefined
        ? 'waiting for a worker'
        : `position ${job.queue_position} in the queue`
      : job.status === 'running'
        ? `step ${step} of ${total}`
        : job.status === 'succeeded'
          ? `${job.input.width}×${job.input.height}, ${total} steps${duration(job)}`
          : '';
  const error = $('current-error');
  error.hidden = !job.error;
  error.textContent = job.error ? `${job.error.code}: ${job.error.message}` : '';
  if (job.status === 'succeeded' && job.outputs && shownImages !== job.id) {
    shownImages = job.id;
    void showImages(job);
  }
  updateHistoryStatus(job);
}

function showJobError(message) {
  const error = $('current-error');
  error.hidden = false;
  error.textContent = message;
}

function duration(job) {
  if (!job.started_at || !job.finished_at) return '';
  const s = (Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000;
  return ` in ${s.toFixed(s < 10 ? 2 : 1)} s`;
}

async function showImages(job) {
  const grid = $('images');
  for (const image of job.outputs.images) {
    const figure = document.createElement('figure');
    const img = document.createElement('img');
    img.alt = `${job.input.prompt} (seed ${image.seed})`;
    img.width = image.width;
    img.height = image.height;
    img.dataset.seed = String(image.seed);
    const caption = document.createElement('figcaption');
    const seed = document.createElement('span');
    seed.textContent = `seed ${image.seed}`;
    const link = document.createElement('a');
    link.textContent = `${image.width}×${image.height} png`;
    caption.append(seed, link);
    figure.append(img, caption, imageDetails(job, image));
    grid.append(figure);
    // Absolute (PUBLIC_URL) or relative to the API: the path is what this page fetches.
    const path = new URL(image.url, location.href).pathname;
    try {
      // Fetched rather than linked so an API key can go along.
      const res = await fetch(path, { headers: authHeaders() });
      if (!res.ok) throw new Error(`image: HTTP ${res.status}`);
      const url = URL.createObjectURL(await res.blob());
      objectUrls.push(url);
      img.src = url;
      link.href = url;
      link.download = `${job.id}-${image.seed}.png`;
    } catch (err) {
      if (err instanceof TypeError) {
        // A redirect to presigned storage the page may not read (CORS): let the browser load it.
        img.src = path;
        link.href = path;
      } else {
        caption.textContent = err.message;
      }
    }
  }
}

/** The prompt the image was made from, each filter's verdict, and its tries when it took more than one. */
function imageDetails(job, image) {
  const details = document.createElement('div');
  details.className = 'image-details';
  const prompt = document.createElement('p');
  prompt.className = 'image-prompt';
  prompt.textContent = image.prompt ?? job.input.prompt;
  details.append(prompt);
  const verdicts = document.createElement('ul');
  verdicts.className = 'verdicts';
  for (const [name, verdict] of Object.entries(image.filters ?? {})) {
    const item = document.createElement('li');
    item.className = `verdict ${verdict.passed ? 'pass' : 'fail'}`;
    item.dataset.filter = name;
    const score = verdict.score === undefined ? '' : ` (${Number(verdict.score).toFixed(verdict.score % 1 ? 2 : 0)})`;
    item.textContent = `${name}: ${verdict.passed ? 'passed' : 'screened out'}${score}`;
    if (verdict.detail) item.title = verdict.detail;
    verdicts.append(item);
  }
  if (image.nsfw_content_detected === null || image.nsfw_content_detected === undefined) {
    const item = document.createElement('li');
    item.className = 'verdict none';
    item.textContent = 'no NSFW check';
    verdicts.append(item);
  }
  if (image.tries > 1 || image.blocked) {
    const item = document.createElement('li');
    item.className = `verdict ${image.blocked ? 'fail' : 'retry'}`;
    item.dataset.tries = String(image.tries);
    item.textContent = image.blocked ? `blocked after ${image.tries} tries: black image` : `made ${image.tries} times`;
    verdicts.append(item);
  }
  details.append(verdicts);
  return details;
}

// ---- Jobs of this browser ---------------------------------------------------------------------

function remembered() {
  try {
    const list = JSON.parse(localStorage.getItem(JOBS_KEY) ?? '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function remember(job) {
  const list = remembered().filter((j) => j.id !== job.id);
  list.unshift({ id: job.id, prompt: job.input?.prompt ?? '', status: job.status, created_at: job.created_at });
  localStorage.setItem(JOBS_KEY, JSON.stringify(list.slice(0, MAX_REMEMBERED)));
  renderHistory();
}

function updateHistoryStatus(job) {
  const list = remembered();
  const entry = list.find((j) => j.id === job.id);
  if (!entry || entry.status === job.status) return;
  entry.status = job.status;
  localStorage.setItem(JOBS_KEY, JSON.stringify(list));
  renderHistory();
}

function renderHistory() {
  const items = remembered().map((entry) => {
    const li = document.createElement('li');
    li.dataset.id = entry.id;
    const status = document.createElement('span');
    status.className = `status ${entry.status}`;
    status.textContent = entry.status;
    const prompt = document.createElement('span');
    prompt.className = 'job-prompt';
    prompt.textContent = entry.prompt;
    prompt.title = entry.id;
    const time = document.createElement('time');
    if (entry.created_at) {
      time.dateTime = entry.created_at;
      time.textContent = new Date(entry.created_at).toLocaleString();
    }
    li.append(status, prompt, time);
    li.addEventListener('click', () => void open(entry.id));
    return li;
  });
  $('history').replaceChildren(...items);
}

async function open(id) {
  try {
    const job = await api(`/v1/jobs/${id}`);
    void follow(job);
  } catch (err) {
    if (err.status === 404) {
      localStorage.setItem(JOBS_KEY, JSON.stringify(remembered().filter((j) => j.id !== id)));
      renderHistory();
    }
    showFormError(err.status === 404 ? 'That job has expired.' : err.message);
  }
}

$('clear-history').addEventListener('click', () => {
  localStorage.removeItem(JOBS_KEY);
  renderHistory();
});

renderHistory();
void loadSchema().then(loadModels);
