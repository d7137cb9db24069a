// What a job made: its downloads, the video (or a compose job's preview) in the player with
// the subtitles as a track, and each event as a line of the job's log.

import { $, bytes, duration, text } from "./dom.js";

const OUTPUT_NAMES = {
  video: "Video (MP4)", vtt: "Subtitles (VTT)", srt: "Subtitles (SRT)",
  transcript: "Transcript (JSON)", poster: "Poster (JPEG)", preview: "Preview (low resolution)",
};

let trackUrl = null; // the subtitle track read as a blob, freed when the next one is read

export async function drawResult(job) {
  const { video, vtt, preview, poster } = job.outputs ?? {};
  $("result").hidden = Object.keys(job.outputs ?? {}).length === 0;
  $("no-video").hidden = Boolean(video ?? preview) || job.kind !== "transcribe";
  $("downloads").replaceChildren(...Object.entries(job.outputs ?? {}).map(([name, out]) => {
    const link = text("a", OUTPUT_NAMES[name] ?? name);
    link.href = out.url;
    link.download = "";
    const li = text("li", "");
    link.append(text("small", bytes(out.size)));
    li.append(link);
    return li;
  }));
  // A compose job's preview plays until its video is stored, then the video replaces it.
  const playing = video ? "video" : "preview";
  const player = $("player");
  player.hidden = !(video ?? preview);
  if (!(video ?? preview)) return;
  if (player.dataset.job === job.id && player.dataset.output === playing) return;
  player.dataset.job = job.id;
  player.dataset.output = playing;
  if (poster) player.poster = poster.url;
  player.replaceChildren();
  player.src = (video ?? preview).url;
  if (!vtt) return;
  const track = document.createElement("track");
  track.kind = "subtitles";
  track.label = "Subtitles";
  if (job.options?.language !== "auto") track.srclang = job.options?.language ?? "en";
  // Burned-in subtitles are in the picture already: the track is there to switch on, not
  // shown twice.
  track.default = job.options?.burn_subtitles === false;
  track.src = await subtitleUrl(vtt.url);
  if (player.dataset.job === job.id) player.append(track); // unless another job was opened
}

// A <track> from another origin needs CORS on the media as well; read as a blob it never does.
async function subtitleUrl(url) {
  try {
    const response = await fetch(url);
    if (!response.ok) return url;
    if (trackUrl) URL.revokeObjectURL(trackUrl);
    trackUrl = URL.createObjectURL(await response.blob());
    return trackUrl;
  } catch {
    return url;
  }
}

export function log(event) {
  const pct = (x) => `${Math.floor(x * 100)}%`;
  const what = {
    queued: event.replay ? "queued again" : "queued",
    started: `${event.stage} started${event.attempts > 1 ? ` (try ${event.attempts})` : ""}`,
    progress: `${event.stage} ${pct(event.stage_progress ?? 0)}`,
    stage_completed: `${event.stage} done`,
    retrying: `${event.stage} failed (${event.error?.code}); `
      + `retry in ${duration(event.retry_in_s ?? 0)}`,
    failed: `failed: ${event.error?.code}`,
    reset: "caught up: the events missed are gone (kept too long ago, or lost by the server), so this is the job as it is now",
  }[event.event] ?? event.event;
  const li = text("li", "");
  li.dataset.id = event.id;
  li.dataset.event = event.event;
  const at = text("time", new Date(event.at).toLocaleTimeString());
  li.append(at, ` ${what} · ${pct(event.progress)}`);
  $("log").append(li);
  $("log-count").textContent = `(${$("log").children.length})`;
}
