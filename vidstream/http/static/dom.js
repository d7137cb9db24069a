// Small pieces every part of the page draws with. Text from the server goes in as text
// (textContent), never as markup.

import { explain } from "./sentences.js";

export const $ = (id) => document.getElementById(id);

// An error is said next to what caused it (`where`: the element beside the file input, the
// timeline, the job's buttons), where a person on a phone is looking; the banner at the top
// only for what belongs to no part of the page. A refused timeline (the only error with
// `details`) names each problem by where it is: one "path: message" a line, as does any
// refused request that lists its problems.
export function tell(where, error) {
  const place = $(where);
  const details = error?.details ?? [];
  place.textContent = error ? explain(error) : "";
  if (details.length) {
    place.textContent = error.code === "invalid_timeline"
      ? "The timeline can't be rendered:" : "The request was refused:";
    const list = text("ul", "");
    const line = ({ path, message }) => text("li", path ? `${path}: ${message}` : message);
    list.append(...details.map(line));
    place.append(list);
  }
  place.hidden = !error;
}

export function text(tag, content, className) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (className) node.className = className;
  return node;
}

export function button(label, className, onClick) {
  const node = text("button", label, className);
  node.type = "button";
  node.onclick = onClick;
  return node;
}

export function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  for (; n >= 1000 && i < units.length - 1; i++) n /= 1000;
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

export function duration(seconds) {
  const s = Math.max(1, Math.round(seconds));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}
