// Errors as sentences a person can act on, by the code the API answers with (docs/api.md).

// By error code (docs/api.md). Messages from the server are written for people, so the
// sentence quotes one where only it knows what was wrong.
export const SENTENCES = {
  invalid_media: (m) => `This file can't be used: ${m || "it is not a playable video with sound."}`,
  too_long: () => "This video is longer than the service accepts. Trim it and try again.",
  too_large: () => "This file is larger than the service accepts.",
  too_large_frame: () =>
    "The picture is larger than the service accepts. Scale the video down and try again.",
  unsupported_language: () =>
    "The speech model here does not know that language. Choose one the page offers.",
  unknown_model: () => "That speech model is not offered here (any more). Choose another.",
  unsupported_task: () => "This speech model cannot translate. Choose a multilingual one.",
  paused: () => "New jobs are paused for maintenance. Try again in a minute.",
  model_load_failed: () =>
    "The speech model could not be loaded on the server. Tell the operator; retry later.",
  whisper_error: () => "Speech recognition failed on this file. Retrying may help.",
  invalid_subtitles: (m) => `The subtitles can't be used: ${m || "they are not valid SRT or VTT."}`,
  forbidden: () => "This key may not do that, or the job belongs to someone else.",
  source_not_found: () => "The uploaded file is no longer there. Upload it again.",
  ffmpeg_failed: () =>
    "The video could not be converted. Retrying may help; if not, the file may be damaged.",
  whisper_crashed: () => "Speech recognition stopped unexpectedly. Retrying usually helps.",
  whisper_unavailable: () =>
    "Speech recognition is not available right now. Try again in a few minutes.",
  storage_error: () => "Storage was not reachable while the job ran. Retrying usually helps.",
  timeout: () => "Processing took too long and was stopped. A shorter video may work.",
  too_many_attempts: () =>
    "The job was interrupted too many times and was given up. Retry it later.",
  unauthorized: () => "The service needs a valid API key. Use the API key button to enter one.",
  rate_limited: (_, after) =>
    `Too many requests just now. Wait ${after ? `${after} s` : "a moment"} and try again.`,
  overloaded: () => "The service is busy with other videos. Try again in a minute.",
  unavailable: () => "The service is briefly unavailable. Try again in a moment.",
  internal_error: () =>
    "Something went wrong on our side. Try again; if it keeps happening, tell the operator.",
  link_used: () => "The upload link was already used. Start the upload again.",
  invalid_signature: () => "The upload link expired. Start the upload again.",
  network: () => "The service could not be reached. Check your connection and try again.",
  invalid_timeline: (m) =>
    `The timeline can't be rendered: ${m || "it does not follow the timeline schema."}`,
};
SENTENCES.storage_unavailable = SENTENCES.storage_error;

export function explain(error) {
  const sentence = SENTENCES[error.code];
  if (sentence) return sentence(error.message, error.retryAfter);
  return error.message || `Something went wrong (${error.code ?? "unknown error"}).`;
}
