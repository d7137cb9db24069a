// The speech model and language picker: the models the gateway lists (GET /v1/models), the
// languages the chosen one knows, "Detect" and "Translate to English" only where the model can.
// A gateway that does not list models keeps the picker hidden and English the only language.
// And what the form asks of the captions.

import { $ } from "./dom.js";

const names = new Intl.DisplayNames(["en"], { type: "language" });

// undefined: not asked yet, or asked without the key it needs; null: the gateway lists none.
let listed;

export async function offerModels(client) {
  try {
    listed = await client.models();
  } catch {
    listed = undefined; // 401 before a key is given, or the network: try again later
  }
  const models = listed?.models ?? [];
  const select = $("model");
  $("model-choice").hidden = !models.length;
  if (!models.length) {
    offerLanguages(null);
    return;
  }
  const chosen = select.value || listed.default;
  select.replaceChildren(...models.map((model) => {
    const option = new Option(model.name, model.name);
    option.selected = model.name === chosen;
    return option;
  }));
  if (!select.value) select.value = listed.default;
  offerLanguages(modelNamed(select.value));
}

export function wanted() {
  return listed === undefined;
}

function modelNamed(name) {
  return listed?.models?.find((model) => model.name === name) ?? null;
}

// English alone when nothing better is known, as the bundled model speaks.
function offerLanguages(model) {
  const select = $("language");
  const before = select.value || "en";
  const codes = model?.languages?.length ? model.languages : ["en"];
  const options = codes.map((code) => new Option(nameOf(code), code))
    .sort((a, b) => a.text.localeCompare(b.text));
  if (model?.multilingual) options.unshift(new Option("Detect", "auto"));
  select.replaceChildren(...options);
  select.value = codes.includes(before) || (before === "auto" && model?.multilingual)
    ? before : (codes.includes("en") ? "en" : select.options[0].value);
  const translates = Boolean(model?.multilingual && model.translate !== false);
  $("translate-choice").hidden = !translates;
  if (!translates) $("translate").checked = false;
}

function nameOf(code) {
  try {
    return names.of(code) ?? code;
  } catch {
    return code; // not a code Intl knows
  }
}

// What a job request says of its speech: `model` only when not the default.
export function speechOptions() {
  const options = { language: $("language").value || "en" };
  const model = $("model").value;
  if (listed?.default && model && model !== listed.default) options.model = model;
  if (!$("translate-choice").hidden && $("translate").checked) options.task = "translate";
  return options;
}

export function wireSpeech() {
  $("model").onchange = () => offerLanguages(modelNamed($("model").value));
}

// The caption fields the form changed from their defaults: the line length for any kind (it
// shapes the SRT and VTT too), the look only where a video is drawn.
export function captionOptions(form, drawn) {
  const chosen = {};
  const chars = Number(form.get("max_chars_per_line"));
  if (chars && chars !== 42) chosen.max_chars_per_line = chars;
  if (!drawn) return chosen;
  if (form.get("style") && form.get("style") !== "default") chosen.style = form.get("style");
  if (form.get("karaoke")) chosen.karaoke = true;
  return chosen;
}
