// The page: choose a video and options, upload (or write a timeline to compose), watch the job
// live, play and download the result, correct its transcript and render it again, and come
// back to recent jobs. Talking to vidstream is api.js's part; this file only draws, with the
// transcript editor in editor.js and the speech and caption choices in speech.js.

import { Client, FINAL, SOURCE_EXTENSIONS, Watcher, refusal, retryable } from "./api.js";
import { $, button, bytes, duration, tell, text } from "./dom.js";
import { Editor } from "./editor.js";
import { askForKey, showKeyState } from "./keys.js";
import { drawResult, log } from "./result.js";
import { explain } from "./sentences.js";
import { captionOptions, offerModels, speechOptions, wanted, wireSpeech } from "./speech.js";

// The API is the page's own origin, unless a frontend hosted elsewhere names it (that origin
// must then be in the gateway's CORS_ORIGINS).
const gateway = (
  new URLSearchParams(location.search).get("gateway") ||
  document.querySelector('meta[name="vidstream-gateway"]')?.content ||
  location.origin
).replace(/\/+$/, "");
const client = new Client(gateway, (rejected) => askForKey(gateway, rejected));

// The stages each kind of job runs, in order, when the job does not list its own; replaced by
// what the gateway says (GET /v1/kinds) once it has answered.
const STAGES = {
  subtitle: ["transcribe", "render"], transcribe: ["transcribe"], compose: ["render"],
  render: ["render"],
};
const STAGE_NAMES = { transcribe: "Transcribe", render: "Render" };
const STAGE_DOING = { transcribe: "Transcribing…", render: "Rendering…" };
const STATUS_NAMES = {
  queued: "Waiting", running: "Working", completed: "Done", failed: "Failed",
  cancelled: "Cancelled",
};
// The compose example: needs no uploads, and fills `{{name}}` from the page's one variable.
const EXAMPLE_TIMELINE = {
  output: { width: 640, height: 360, fps: 25, duration: 4 },
  tracks: [
    { clips: [{ type: "color", start: 0, duration: 4, color: "#1d3557",
      gradient: { to: "#457b9d" } }] },
    { clips: [{ type: "text", text: "Hello {{name}}", start: 0.5, duration: 3, size: 64,
      bold: true, transition_in: { type: "fade", duration: 0.5 } }] },
  ],
};

function say(error) {
  tell("notice", error);
}

// -- recent jobs ------------------------------------------------------------------------------

// Only ids are kept, per gateway: the job itself is read fresh, with new links and token.
const RECENT_SLOT = `vidstream.jobs ${gateway}`;
const known = new Map(); // id → the job as last read or watched

function recentIds() {
  try { return JSON.parse(localStorage.getItem(RECENT_SLOT)) ?? []; } catch { return []; }
}

function remember(id) {
  const ids = [id, ...recentIds().filter((other) => other !== id)].slice(0, 12);
  localStorage.setItem(RECENT_SLOT, JSON.stringify(ids));
}

function forget(id) {
  localStorage.setItem(RECENT_SLOT, JSON.stringify(recentIds().filter((other) => other !== id)));
  known.delete(id);
}

async function refreshRecent() {
  let failure = null;
  await Promise.all(recentIds().map(async (id) => {
    try {
      known.set(id, await client.getJob(id));
    } catch (error) {
      if (error.status === 404) forget(id); // expired, or made with another tenant's key
      else failure = error;
    }
  }));
  drawRecent();
  if (failure) say(failure);
}

function drawRecent() {
  const items = recentIds().filter((id) => known.has(id)).map((id) => {
    const job = known.get(id);
    const li = document.createElement("li");
    li.dataset.id = id;
    if (view.job?.id === id) li.setAttribute("aria-current", "true");
    const open = button("", "open", () => openJob(known.get(id), { shown: true }));
    open.append(text("strong", titleOf(job, job.id)),
      text("small", `${new Date(job.created_at).toLocaleString()} · ${job.kind}`));
    li.append(open, pill(job.status));
    if (!FINAL.has(job.status)) {
      li.append(button("Cancel", "quiet", () => cancel(id, "recent-error")));
    }
    if (canRetry(job)) li.append(button("Retry", "", () => retry(id, "recent-error")));
    return li;
  });
  $("recent").replaceChildren(...items);
  $("recent-empty").hidden = items.length > 0;
}

// Retry is offered only where it may help: not for input the service cannot use.
function canRetry(job) {
  return job.status === "failed" && retryable(job.error);
}

async function cancel(id, where = "action-error") {
  tell(where, null);
  try {
    known.set(id, { ...known.get(id), ...(await client.cancelJob(id)) });
    drawRecent(); // the watcher, if it follows this job, hears `cancelled` on its own
  } catch (error) {
    tell(where, error);
  }
}

async function retry(id, where = "action-error") {
  tell(where, null);
  try {
    await client.retryJob(id);
    // The retry answer has no token or links: read the job again for them.
    const job = await client.getJob(id);
    known.set(id, job);
    drawRecent();
    // A retry starts a new run: an id of the old one would be answered with a reset, so
    // read the whole history again ("0-0"), both runs, and draw the log afresh.
    openJob(job, { shown: true });
  } catch (error) {
    tell(where, error);
  }
}

// -- upload -----------------------------------------------------------------------------------

let chosen = null;

// A file the service would refuse for certain is refused here, before any of it is sent.
function choose(file) {
  const refused = file ? refusal(file) : null;
  chosen = file && !refused ? file : null;
  $("file-name").textContent = file ? `${file.name} · ${bytes(file.size)}` : "";
  fileError(refused && { code: "refused_file", message: refused });
  $("start").disabled = !chosen;
}

function fileError(error) {
  tell("file-error", error);
  if (error) $("file").setAttribute("aria-invalid", "true");
  else $("file").removeAttribute("aria-invalid");
}

// Speed over the last few seconds, not since the start, so the time left follows the network.
function meter(total) {
  const samples = [];
  return (loaded) => {
    const now = performance.now();
    samples.push([now, loaded]);
    while (samples.length > 2 && now - samples[0][0] > 3000) samples.shift();
    const [t0, b0] = samples[0];
    const speed = now > t0 ? ((loaded - b0) * 1000) / (now - t0) : 0;
    $("upload-bar").value = total ? (100 * loaded) / total : 0;
    $("upload-bar").setAttribute("aria-valuenow", Math.floor($("upload-bar").value));
    const parts = [`${bytes(loaded)} of ${bytes(total)}`];
    if (speed > 0) parts.push(`${bytes(speed)}/s`);
    if (speed > 0 && loaded < total) parts.push(`${duration((total - loaded) / speed)} left`);
    $("upload-text").textContent = parts.join(" · ");
  };
}

async function submit(event) {
  event.preventDefault();
  const file = chosen; // the person may pick another while this one uploads
  if (!file) return;
  const form = new FormData($("job-form"));
  const options = { kind: form.get("kind"), ...speechOptions() };
  if (renders(options.kind)) options.burn_subtitles = form.get("burn") === "true";
  Object.assign(options, captionOptions(form, renders(options.kind)));
  fileError(null);
  $("start").disabled = true;
  $("upload").hidden = false;
  $("upload-bar").value = 0;
  $("upload-bar").setAttribute("aria-valuenow", "0");
  $("upload-bar").setAttribute("aria-label", `Upload of ${file.name}`);
  $("upload-text").textContent = "Asking for an upload link…";
  try {
    const job = await client.submit(file, options, meter(file.size));
    $("upload-text").textContent = `Uploaded ${file.name} (${bytes(file.size)}).`;
    started(job);
  } catch (error) {
    $("upload-text").textContent = "The upload did not finish.";
    fileError(error);
  } finally {
    $("start").disabled = !chosen;
  }
}

// -- compose ----------------------------------------------------------------------------------

// The timeline is checked whole by the gateway; only "is it JSON at all" is the page's to say.
// Either way the problems are listed under the timeline.
function timelineError(error) {
  tell("timeline-error", typeof error === "string" ? { message: error } : error);
  if (error) $("timeline").setAttribute("aria-invalid", "true");
  else $("timeline").removeAttribute("aria-invalid");
}

async function compose(event) {
  event.preventDefault();
  let timeline;
  try {
    timeline = JSON.parse($("timeline").value);
  } catch (error) {
    timelineError(`This is not JSON: ${error.message}`);
    $("timeline").focus();
    return;
  }
  if (timeline === null || typeof timeline !== "object" || Array.isArray(timeline)) {
    timelineError('A timeline is a JSON object: { "output": {…}, "tracks": […] }.');
    $("timeline").focus();
    return;
  }
  timelineError(null);
  $("render").disabled = true;
  try {
    const job = await client.createJob({
      kind: "compose", timeline, variables: { name: $("var-name").value }, preview: true,
    });
    started(job);
  } catch (error) {
    timelineError(error);
    $("timeline").focus();
  } finally {
    $("render").disabled = false;
  }
}

// -- correcting a transcript -------------------------------------------------------------------

// The fields of each kind's request, from GET /v1/kinds; these until it has answered.
const FIELDS = {
  render: ["burn_subtitles", "formats", "max_chars_per_line", "max_lines", "position"],
};
// A render request's own fields, not carried over from the job it renders again.
const NOT_KEPT = new Set(["kind", "job", "transcript", "captions", "language"]);

// The corrected transcript rendered as the job was: every option of its (burning or not,
// the captions' layout and look) that a render request takes.
async function renderAgain(jobId, transcript) {
  tell("rerender-error", null);
  const options = known.get(jobId)?.options ?? view.job?.options ?? {};
  const kept = {};
  for (const [name, value] of Object.entries(options)) {
    if (FIELDS.render.includes(name) && !NOT_KEPT.has(name) && value != null) kept[name] = value;
  }
  kept.burn_subtitles ??= true;
  $("rerender").disabled = true;
  try {
    started(await client.renderAgain(jobId, transcript, kept));
  } catch (error) {
    tell("rerender-error", error);
    $("rerender").disabled = false;
  }
}

const editor = new Editor({
  root: $("transcript"), list: $("cues"), player: $("player"), save: $("rerender"),
  count: $("edits"), onSave: renderAgain,
});

// -- the job ----------------------------------------------------------------------------------

const view = { job: null, watcher: null, pace: null, reads: 0 };

// A job the person just made: remembered, followed, and its card brought into view (on a
// phone it is below the forms).
function started(job) {
  remember(job.id);
  known.set(job.id, job);
  openJob(job, { shown: true });
}

function openJob(job, { since = "0-0", shown = false } = {}) {
  view.watcher?.stop();
  view.job = { ...job };
  view.pace = null;
  $("welcome").hidden = true;
  $("job").hidden = false;
  $("job-title").textContent = titleOf(job, "Video");
  $("job-id").textContent = job.id;
  tell("action-error", null);
  if (since === "0-0") {
    $("log").replaceChildren();
    $("eta").hidden = true;
    $("result").hidden = true;
    $("player").removeAttribute("src");
    delete $("player").dataset.job;
    $("player").removeAttribute("poster");
    editor.hide();
    tell("rerender-error", null);
    $("stages").replaceChildren(...stagesOf(job).map((stage) => stageRow(stage, job)));
  }
  drawJob();
  drawRecent();
  if (FINAL.has(job.status)) showResult(job);
  view.watcher = new Watcher(job, client, {
    since,
    onSnapshot: (fresh) => { view.job = { ...view.job, ...fresh, status: view.job.status }; },
    onReset,
    onEvent,
    onState: showConnection,
  });
  view.watcher.start();
  if (shown) bringIntoView($("job"));
}

// On a phone the job's card is below the forms: scroll to it, unless its top is in sight.
function bringIntoView(node) {
  const top = node.getBoundingClientRect().top;
  if (top < 0 || top > innerHeight - 120) node.scrollIntoView({ block: "start" });
}

function stageRow(stage, job = view.job) {
  const row = document.createElement("div");
  row.className = "stage";
  row.dataset.stage = stage;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  // Named for the stage and the job, so a screen reader says which bar moves.
  bar.setAttribute("aria-label", `${STAGE_NAMES[stage] ?? stage}: ${titleOf(job, job.id)}`);
  bar.setAttribute("aria-valuenow", "0");
  row.append(text("span", STAGE_NAMES[stage] ?? stage, "stage-name"), bar);
  row.append(text("span", "", "stage-pct"));
  return row;
}

// Progress never goes back (as on the server): a replayed or repeated event cannot empty a bar.
function setStage(stage, fraction) {
  let row = $("stages").querySelector(`[data-stage="${stage}"]`);
  if (!row) $("stages").append((row = stageRow(stage))); // a stage this page does not know yet
  const bar = row.querySelector("progress");
  bar.value = Math.max(bar.value, Math.min(100, fraction * 100));
  bar.setAttribute("aria-valuenow", Math.floor(bar.value));
  row.querySelector(".stage-pct").textContent = `${Math.floor(bar.value)}%`;
}

function onEvent(event) {
  const job = view.job;
  Object.assign(job, { status: event.status, stage: event.stage, progress: event.progress });
  if (event.event === "progress") setStage(event.stage, event.stage_progress ?? 0);
  if (event.event === "stage_completed") setStage(event.stage, 1);
  if (event.event === "completed") stagesOf(job).forEach((stage) => setStage(stage, 1));
  if (event.event === "started" || event.event === "queued") job.error = null;
  if (event.error) job.error = { ...event.error, retryIn: event.retry_in_s };
  if (event.event === "failed" && job.error) delete job.error.retryIn;
  estimate(event);
  log(event);
  drawJob();
  known.set(job.id, { ...known.get(job.id), ...job });
  drawRecent();
  if (FINAL.has(event.event)) readOutputs(job.id);
  // An output stored before its stage ends (a compose job's preview): shown while it renders.
  else if (event.event === "progress" && event.outputs?.length) readOutputs(job.id);
}

// The events missed are no longer all kept: take the job as it is now, and say so in the log.
function onReset(fresh, lastId) {
  view.job = { ...view.job, ...fresh };
  view.pace = null;
  const done = stagesOf(fresh).indexOf(fresh.stage);
  stagesOf(fresh).forEach((stage, i) => { if (i < done) setStage(stage, 1); });
  if (fresh.status === "completed") stagesOf(fresh).forEach((s) => setStage(s, 1));
  log({ id: lastId, event: "reset", at: fresh.updated_at, progress: fresh.progress ?? 0 });
  drawJob();
  known.set(fresh.id, { ...known.get(fresh.id), ...fresh });
  drawRecent();
  if (FINAL.has(fresh.status)) readOutputs(fresh.id);
  else if (fresh.outputs?.preview) showResult(fresh);
}

// Time left: the server's estimate (`eta_s`) when it sends one, else the job's pace so far,
// measured on the server's clock (each event's `at`), so replayed events tell the same.
function estimate(event) {
  const at = Date.parse(event.at) / 1000;
  if (event.status !== "running") view.pace = null;
  else if (!view.pace) view.pace = { at, progress: event.progress };
  let left = event.eta_s;
  if (left == null && view.pace && event.event === "progress") {
    const done = event.progress - view.pace.progress;
    const took = at - view.pace.at;
    if (done > 0.02 && took > 0.5) left = ((1 - event.progress) * took) / done;
  }
  if (!view.pace) $("eta").textContent = "";
  else if (left != null) $("eta").textContent = `About ${duration(left)} left`;
  $("eta").hidden = !$("eta").textContent;
}

// Outputs in events are names only; the job read afresh carries their signed links. Only the
// newest read is shown: an early one answered late would take the final outputs away.
async function readOutputs(id) {
  const read = (view.reads += 1);
  try {
    const job = await client.getJob(id);
    if (read !== view.reads) return;
    known.set(id, job);
    if (view.job?.id === id) showResult(job);
  } catch (error) {
    tell("action-error", error);
  }
}

function drawJob() {
  const job = view.job;
  const status = $("job-status");
  status.dataset.status = job.status;
  status.textContent = (job.status === "running" && STAGE_DOING[job.stage])
    || STATUS_NAMES[job.status] || job.status;
  $("cancel").hidden = FINAL.has(job.status);
  $("retry").hidden = !canRetry(job);
  for (const row of $("stages").children) {
    row.classList.toggle("active", job.status === "running" && row.dataset.stage === job.stage);
  }
  const error = job.error;
  $("job-error").hidden = !error;
  if (error) {
    $("job-error").textContent = error.retryIn != null
      ? `Trying again in ${duration(error.retryIn)}: ${explain(error)}` : explain(error);
  }
}

// A transcript to correct, with the video to play it against when there is one. (A compose
// job's source is one of its clips: it is not rendered again.)
function showResult(job) {
  if (job.kind === "compose") editor.hide();
  else editor.show(job);
  drawResult(job);
}

function showConnection(state, detail) {
  const words = {
    connecting: "connecting…", reconnecting: "reconnecting…", live: "live",
    waiting: `connection lost; retrying in ${duration((detail?.delay ?? 0) / 1000)}`,
    closed: "finished", refused: "not allowed to follow this job",
  };
  $("connection").textContent = words[state] ?? state;
  if (state === "refused") tell("action-error", detail);
}

// -- small helpers ----------------------------------------------------------------------------

function pill(status) {
  const node = text("span", STATUS_NAMES[status] ?? status, "pill");
  node.dataset.status = status;
  return node;
}

function stagesOf(job) {
  return job.stages ?? STAGES[job.kind] ?? [];
}

// Whether a kind makes a video, so whether burning the subtitles in is a choice.
function renders(kind) {
  return (STAGES[kind] ?? []).includes("render");
}

// Offer the kinds the gateway makes from a video, as it names them; the default one chosen.
async function offerKinds() {
  let listed;
  try {
    listed = await client.kinds();
  } catch {
    return; // the choices written in the page stay
  }
  for (const kind of listed) {
    STAGES[kind.name] = kind.stages;
    if (kind.fields) FIELDS[kind.name] = kind.fields;
  }
  const choices = listed.filter((kind) => kind.from_video);
  if (!choices.length) return;
  const fieldset = $("kind-choice");
  fieldset.replaceChildren(text("legend", "Make"));
  for (const kind of choices) {
    const input = document.createElement("input");
    Object.assign(input, { type: "radio", name: "kind", value: kind.name, checked: kind.default });
    const label = document.createElement("label");
    label.title = kind.summary;
    label.append(input, ` ${kind.title}`);
    fieldset.append(label);
  }
  if (!fieldset.querySelector("input:checked")) fieldset.querySelector("input").checked = true;
  $("job-form").onchange();
}

// A compose job has no uploaded file to be named after; a render job is its source's again.
function titleOf(job, otherwise) {
  const name = job.source?.name;
  if (name && job.kind === "render") return `${name} (corrected)`;
  return name || (job.kind === "compose" ? "Composed video" : otherwise);
}

// -- wiring -----------------------------------------------------------------------------------

$("gateway").textContent = new URL(gateway).host;
$("file").onchange = (event) => choose(event.target.files[0]);
$("job-form").onsubmit = submit;
$("job-form").onchange = () => {
  const drawn = renders(new FormData($("job-form")).get("kind"));
  $("burn-choice").disabled = !drawn;
  $("caption-style").disabled = $("karaoke").disabled = !drawn;
};
wireSpeech();
client.onKey = () => { if (wanted()) offerModels(client); }; // listed to key holders only
$("compose-form").onsubmit = compose;
$("timeline").value = JSON.stringify(EXAMPLE_TIMELINE, null, 2);
$("timeline").oninput = () => timelineError(null);
$("var-name").value = "vidstream";
$("schema-link").href = `${gateway}/v1/schemas/timeline.json`;
$("cancel").onclick = () => cancel(view.job.id);
$("retry").onclick = () => retry(view.job.id);
$("file").accept = ["video/*", "audio/*", ...SOURCE_EXTENSIONS.map((e) => `.${e}`)].join(",");
$("key-button").onclick = () => askForKey(gateway, false).then(
  (key) => { client.key = key; }, () => {},
);

const drop = $("drop");
drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
};
// Corrections not yet rendered are lost with the page: the browser asks first.
window.addEventListener("beforeunload", (event) => {
  if (!editor.changes) return;
  event.preventDefault();
  event.returnValue = ""; // what older browsers ask for the prompt
});
// A file dropped beside the zone would otherwise replace the page with the video.
window.ondragover = window.ondrop = (event) => event.preventDefault();

// For tests and the curious: lose the live connection as a network failure would.
window.vidstream = {
  dropConnection() {
    const state = { status: view.job?.status, lastEventId: view.watcher?.lastId };
    view.watcher?.drop();
    return state;
  },
  get connections() { return view.watcher?.connections ?? 0; },
};

showKeyState(Boolean(client.key));
offerKinds();
offerModels(client).then(() => { window.vidstream.speech = "offered"; });
refreshRecent().then(() => {
  const newest = known.get(recentIds()[0]);
  if (newest && !view.job) openJob(newest);
});
