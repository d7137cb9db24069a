// The vidstream client a page needs, with no DOM in it: gateway calls with an API key, uploads
// straight to storage, and a job's events over the WebSocket. app.js draws; this file is the
// part another frontend would copy. The contract it follows is docs/api.md.

export const FINAL = new Set(["completed", "failed", "cancelled"]);

// What a source may be: the containers the workers read (vidstream/media/info.py, videos or
// sound alone), as file names and types show them. The workers check the bytes themselves;
// this only spares a person uploading a file that is refused for certain.
export const SOURCE_EXTENSIONS = [
  "mp4", "m4v", "mov", "3gp", "mkv", "webm", "avi", "ts", "mts", "m2ts", "flv", "ogv", "ogg",
  "oga", "opus", "wmv", "asf", "mpg", "mpeg", "vob", "wav", "mp3", "flac", "aac", "m4a",
];
const SOURCE_NAMES = "MP4, MOV, MKV, WebM, AVI, MPEG-TS, FLV, Ogg, WMV, MPEG, WAV, MP3, FLAC or AAC";

// Why a file chosen as a source would be refused, or null if it may be sent.
export function refusal(file) {
  const dot = file.name.lastIndexOf(".");
  const extension = dot > 0 ? file.name.slice(dot + 1).toLowerCase() : "";
  const named = SOURCE_EXTENSIONS.includes(extension);
  // A name without a known extension may still say what it is by its type.
  const typed = !extension && /^(video|audio)\//.test(file.type);
  if (!named && !typed) {
    return `${file.name} is not a video or sound file vidstream reads (${SOURCE_NAMES}).`;
  }
  if (file.size === 0) return `${file.name} is empty.`;
  return null;
}

// Failures the input causes (docs/api.md; PermanentError in vidstream/core/errors.py): running
// the job again would fail the same way, so a retry is not offered for them.
const PERMANENT = new Set([
  "invalid_media", "unsupported_media", "unsupported_media_type", "invalid_subtitles",
  "unsupported_language", "invalid_request", "invalid_key", "too_large", "too_long",
  "too_large_frame", "too_many_pixels", "too_much_memory", "invalid_timeline", "missing_asset",
  "source_not_found", "not_found", "conflict", "unknown_model", "unsupported_task",
]);

// Whether running a failed job again may succeed: as the job says, when it says.
export function retryable(error) {
  if (!error) return true;
  if (typeof error.retryable === "boolean") return error.retryable;
  return !PERMANENT.has(error.code);
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from Retry-After on 429 and 503
    this.details = details; // [{path, rule, message}]: each problem of a refused timeline
  }
}

export class Client {
  // askForKey(rejected) resolves with a key typed by the person, or rejects if they decline.
  constructor(gateway, askForKey) {
    this.gateway = gateway;
    this.askForKey = askForKey;
    this.asking = null;
    // Kept for the tab's life only, and for this gateway only: a link to the page with
    // another ?gateway= must not carry the key there.
    this.keySlot = `vidstream.apiKey ${gateway}`;
  }

  get key() {
    return sessionStorage.getItem(this.keySlot);
  }

  set key(value) {
    if (value) sessionStorage.setItem(this.keySlot, value);
    else sessionStorage.removeItem(this.keySlot);
    if (value) this.onKey?.(value); // a call that was refused for want of one may try again
  }

  // Every gateway call: sends the key, and on 401 asks for one and tries again, so a page
  // opened without a key works as soon as one is given (unless `ask` is false: a call the
  // page makes on its own, which must not open the question before the person does anything).
  async call(method, path, body, { ask = true } = {}) {
    for (;;) {
      const headers = {};
      if (this.key) headers.Authorization = `Bearer ${this.key}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let response;
      try {
        response = await fetch(this.gateway + path, {
          method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch {
        throw new ApiError(0, "network", "The service could not be reached.");
      }
      if (response.status === 401 && ask) {
        const rejected = Boolean(this.key);
        this.key = null;
        // Calls that fail together (say, refreshing the recent jobs) share one question.
        this.asking ??= this.askForKey(rejected).finally(() => { this.asking = null; });
        this.key = await this.asking;
        continue;
      }
      const payload = await response.json().catch(() => null);
      const retryAfter = response.headers.get("Retry-After");
      if (!response.ok) throw errorOf(response.status, payload, retryAfter);
      return payload;
    }
  }

  getJob(id) { return this.call("GET", `/v1/jobs/${encodeURIComponent(id)}`); }
  // The kinds of job the gateway makes (public: no key needed).
  async kinds() { return (await this.call("GET", "/v1/kinds")).kinds; }
  // The speech models the workers have ({default, models: [{name, multilingual, languages,
  // translate}]}), or null from a gateway that does not list them. Throws 401 without a key.
  async models() {
    try {
      return await this.call("GET", "/v1/models", undefined, { ask: false });
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }
  cancelJob(id) { return this.call("DELETE", `/v1/jobs/${encodeURIComponent(id)}`); }
  retryJob(id) { return this.call("POST", `/v1/jobs/${encodeURIComponent(id)}/retry`); }
  // A job that needs no upload of its own, such as {kind: "compose", timeline, variables}.
  createJob(request) { return this.call("POST", "/v1/jobs", request); }
  // A finished job's video rendered again with its transcript as corrected: no transcribing.
  // A long video's transcript is more than a JSON request may hold (1 MiB, about 80 minutes of
  // speech): past INLINE_BYTES it goes as an upload, named by key (`captions`).
  async renderAgain(jobId, transcript, options = {}) {
    const body = JSON.stringify(transcript);
    if (body.length <= INLINE_BYTES) {
      return this.createJob({ kind: "render", job: jobId, transcript, ...options });
    }
    const file = new File([body], "transcript.json", { type: "application/json" });
    const ticket = await this.call("POST", "/v1/uploads", {
      filename: file.name, content_type: file.type, size: file.size,
    });
    await put(ticket, file, () => {});
    return this.createJob({ kind: "render", job: jobId, captions: { key: ticket.key }, ...options });
  }

  // Ask for a signed upload link, PUT the bytes there, and make the job from the stored key.
  // With a bucket the bytes never pass through the gateway.
  async submit(file, options, onProgress) {
    const ticket = await this.call("POST", "/v1/uploads", {
      filename: file.name,
      content_type: file.type || "application/octet-stream",
      size: file.size,
    });
    await put(ticket, file, onProgress);
    return this.call("POST", "/v1/jobs", { source: { key: ticket.key }, ...options });
  }
}

const INLINE_BYTES = 900_000; // a corrected transcript sent in the request itself, at most

// XMLHttpRequest rather than fetch(): only it reports upload progress.
function put(ticket, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(ticket.method, ticket.upload_url);
    // Exactly the ticket's headers, as the link was signed for them; never the API key: the
    // link is its own permission and may point at a bucket that is not ours to send keys to.
    for (const [name, value] of Object.entries(ticket.headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      let payload = null;
      try { payload = JSON.parse(xhr.responseText); } catch { /* a bucket answers in XML */ }
      reject(errorOf(xhr.status, payload, xhr.getResponseHeader("Retry-After")));
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "The upload was interrupted."));
    xhr.send(file);
  });
}

function errorOf(status, payload, retryAfter) {
  const error = payload?.error ?? {};
  const code = error.code ?? (status === 413 ? "too_large" : `http_${status}`);
  const details = Array.isArray(error.details) ? error.details : [];
  return new ApiError(status, code, error.message ?? "", retryAfter && Number(retryAfter), details);
}

// Event ids are Redis stream ids, "<ms>-<seq>": compared as numbers, not as strings.
export function compareIds(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
}

// Follows one job over the WebSocket and passes on each of its events exactly once. A dropped
// connection, whatever dropped it, is reopened with growing delays and subscribed again from
// the last event seen, so the notifier replays just what was missed.
export class Watcher {
  static PING_MS = 15_000;

  constructor(job, client, { since = "0-0", onSnapshot, onReset, onEvent, onState }) {
    this.job = job;
    this.client = client;
    this.lastId = since; // "0-0": the whole history, so the log shows every event
    this.handlers = { onSnapshot, onReset, onEvent, onState };
    this.ws = null;
    this.failures = 0; // in a row, for the backoff
    this.connections = 0;
    this.stopped = false;
    this.timers = {};
    this.renewedToken = false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "done");
    this.handlers.onState("closed");
  }

  // Closes the socket as a network failure would; what follows is the ordinary recovery.
  drop() {
    this.ws?.close(4000, "dropped");
  }

  connect() {
    const ws = new WebSocket(this.job.links.ws);
    this.ws = ws;
    this.connections += 1;
    this.handlers.onState(this.connections > 1 ? "reconnecting" : "connecting");
    ws.onopen = () => ws.send(JSON.stringify({
      type: "subscribe", job_id: this.job.id, token: this.job.ws_token, last_event_id: this.lastId,
    }));
    let heardAt = Date.now();
    ws.onmessage = (message) => {
      heardAt = Date.now();
      this.receive(JSON.parse(message.data));
    };
    ws.onclose = () => this.lost(ws);
    // A network that dies quietly closes nothing: an unanswered ping is the only sign of it.
    this.timers.ping = setInterval(() => {
      if (Date.now() - heardAt > 2 * Watcher.PING_MS) this.lost(ws);
      else if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
    }, Watcher.PING_MS);
  }

  receive(msg) {
    if (msg.type === "snapshot") {
      this.failures = 0;
      this.renewedToken = false;
      this.handlers.onState("live");
      this.snapshotId = msg.last_event_id;
      this.handlers.onSnapshot(msg.job);
    } else if (msg.type === "reset") {
      // The events since our last id are no longer all kept (or the job was retried since):
      // the server sends the job as it is now instead, and live events after it.
      this.failures = 0;
      this.renewedToken = false;
      this.lastId = this.snapshotId = msg.last_event_id;
      this.handlers.onState("live");
      this.handlers.onReset(msg.job, msg.last_event_id);
      if (FINAL.has(msg.job.status)) this.stop();
    } else if (msg.type === "event") {
      if (compareIds(msg.id, this.lastId) <= 0) return; // seen before a reconnect
      this.lastId = msg.id;
      this.handlers.onEvent(msg);
      // The end of the job, unless it is an earlier run's end replayed from the history (the
      // job was retried since: the snapshot is newer). The server ends the subscription too.
      if (FINAL.has(msg.event) && compareIds(msg.id, this.snapshotId ?? "0-0") >= 0) this.stop();
    } else if (msg.type === "error" && msg.code === "unavailable") {
      this.ws?.close(4001, "try later"); // the job store is down for now: back off, come back
    } else if (msg.type === "error" && msg.code === "forbidden" && !this.renewedToken) {
      this.renewToken(); // a ws_token lasts a day; the page may have been open for longer
    } else if (msg.type === "error") {
      this.stop();
      this.handlers.onState("refused", msg);
    }
  }

  async renewToken() {
    this.renewedToken = true;
    try {
      const fresh = await this.client.getJob(this.job.id);
      this.job = { ...this.job, ws_token: fresh.ws_token, links: fresh.links };
    } catch { /* the old token once more; a second refusal is final */ }
    this.ws?.close(4002, "new token");
  }

  lost(ws) {
    if (ws !== this.ws || this.stopped) return; // an old socket, or closed on purpose
    this.ws = null;
    this.clearTimers();
    ws.onclose = null;
    ws.close(4003, "lost");
    // 0.5 s, 1 s, 2 s ... up to 30 s, each shortened by up to half at random, so the pages
    // that lost one notifier do not all come back at the same instant.
    const delay = Math.min(30_000, 500 * 2 ** this.failures) * (1 - Math.random() / 2);
    this.failures += 1;
    this.handlers.onState("waiting", { delay });
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  clearTimers() {
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.retry);
  }
}
