// The transcript beside the player: a cue a segment, the one being spoken lit as the video
// plays. A click on a cue's time or a word seeks there; a click on a word also opens it for
// correcting (Enter keeps the change, Escape drops it). Words the model was unsure of are
// marked for a look. "Save and re-render" hands the corrected transcript JSON to `onSave`,
// which makes a render job of it (the video again, not transcribed again).

import { text as element } from "./dom.js";

// Below this probability a word is marked for review.
export const DOUBT = 0.5;

export class Editor {
  constructor({ root, list, player, save, count, onSave }) {
    Object.assign(this, { root, list, player, save, count, onSave });
    this.doc = null; // the transcript JSON, corrected in place
    this.jobId = null;
    this.edited = new WeakSet(); // the words (and wordless segments) changed here
    this.changes = 0;
    this.now = { cue: null, word: null };
    player.addEventListener("timeupdate", () => this.follow());
    player.addEventListener("seeked", () => this.follow());
    save.onclick = () => this.onSave(this.jobId, this.doc);
  }

  // Show the transcript of `job` (read from its signed link), unless it is shown already.
  async show(job) {
    const output = job.outputs?.transcript;
    if (!output || job.status !== "completed") return this.hide();
    if (this.jobId === job.id && this.doc) return;
    this.jobId = job.id;
    let doc;
    try {
      const response = await fetch(output.url);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      doc = await response.json();
    } catch {
      if (this.jobId === job.id) this.hide(); // the player and downloads still work
      return;
    }
    if (this.jobId !== job.id || !Array.isArray(doc?.segments)) return; // another job opened
    this.doc = doc;
    this.changes = 0;
    this.edited = new WeakSet();
    this.draw();
    this.root.hidden = false;
  }

  hide() {
    this.root.hidden = true;
    this.jobId = null;
    this.doc = null;
    this.changes = 0;
    this.list.replaceChildren();
  }

  draw() {
    this.now = { cue: null, word: null };
    this.list.replaceChildren(...this.doc.segments.map((segment, i) => this.cue(segment, i)));
    this.count.textContent = this.changes === 1 ? "1 correction" : `${this.changes} corrections`;
    this.count.hidden = this.changes === 0;
    this.save.disabled = this.changes === 0;
    this.follow();
  }

  cue(segment, index) {
    const li = document.createElement("li");
    li.className = "cue";
    li.dataset.index = index;
    const time = element("button", clock(segment.start), "cue-time");
    time.type = "button";
    time.setAttribute("aria-label", `Play from ${clock(segment.start)}`);
    time.onclick = () => this.seek(segment.start);
    const said = element("p", "", "cue-text");
    // A segment without words is corrected whole: it is then its one "word".
    const words = segment.words?.length ? segment.words : [null];
    words.forEach((word, i) => {
      if (i) said.append(" ");
      said.append(this.word(segment, word, index, i));
    });
    li.append(time, said);
    return li;
  }

  word(segment, word, cueIndex, wordIndex) {
    const node = element("button", word ? word.word : segment.text, "word");
    node.type = "button";
    node.dataset.cue = cueIndex;
    node.dataset.word = wordIndex;
    if (word && typeof word.probability === "number" && word.probability < DOUBT) {
      node.classList.add("doubt");
      node.title = `Check this word: the speech model was ${Math.round(word.probability * 100)}% sure of it`;
    }
    if (this.edited.has(word ?? segment)) node.classList.add("edited");
    node.onclick = () => {
      this.seek(word ? word.start : segment.start);
      this.edit(node, segment, word);
    };
    return node;
  }

  seek(seconds) {
    if (!Number.isFinite(seconds)) return;
    // A hair inside the word, so the cue it starts is the one lit.
    this.player.currentTime = seconds + 0.01;
    this.follow(seconds + 0.01);
  }

  edit(node, segment, word) {
    const input = document.createElement("input");
    input.className = "word-input";
    input.value = node.textContent;
    input.size = Math.max(4, input.value.length + 2);
    input.setAttribute("aria-label", `Correct “${node.textContent}”`);
    input.spellcheck = true;
    let done = false;
    const finish = (keep) => {
      if (done) return;
      done = true;
      if (keep) this.correct(segment, word, input.value);
      this.draw();
      this.list.querySelector(
        `[data-cue="${node.dataset.cue}"][data-word="${node.dataset.word}"]`,
      )?.focus();
    };
    input.onkeydown = (event) => {
      if (event.key === "Enter") { event.preventDefault(); finish(true); }
      if (event.key === "Escape") { event.preventDefault(); finish(false); }
    };
    input.onblur = () => finish(true);
    input.oninput = () => { input.size = Math.max(4, input.value.length + 2); };
    node.replaceWith(input);
    input.focus();
    input.select();
  }

  // The segment's text is its words again, so the server keeps their times (its words are
  // kept only while they say the text). An emptied word is taken out; one typed as several
  // ("New York") becomes several, sharing its time, so karaoke still lights each as said.
  correct(segment, word, typed) {
    const text = typed.trim().replace(/\s+/g, " ");
    const before = word ? word.word : segment.text;
    if (text === before) return;
    if (word) {
      const parts = text ? text.split(" ") : [];
      const step = (word.end - word.start) / Math.max(parts.length, 1);
      const made = parts.map((part, i) => ({
        ...word, word: part, start: word.start + i * step, end: word.start + (i + 1) * step,
      }));
      segment.words.splice(segment.words.indexOf(word), 1, ...made);
      for (const piece of made) this.edited.add(piece);
      segment.text = segment.words.map((w) => w.word).join(" ");
    } else {
      segment.text = text;
      this.edited.add(segment);
    }
    this.doc.text = this.doc.segments.map((s) => s.text).filter(Boolean).join(" ");
    this.changes += 1;
  }

  // Light the cue (and word) being spoken at the player's time.
  follow(at = this.player.currentTime) {
    if (!this.doc) return;
    const segments = this.doc.segments;
    const index = segments.findIndex((s) => s.start <= at && at < s.end);
    const cue = index < 0 ? null : this.list.children[index];
    if (cue !== this.now.cue) {
      this.now.cue?.classList.remove("now");
      this.now.cue?.removeAttribute("aria-current");
      cue?.classList.add("now");
      cue?.setAttribute("aria-current", "true");
      this.now.cue = cue;
      if (cue) keepInView(this.list, cue);
    }
    const words = index < 0 ? [] : segments[index].words ?? [];
    const w = words.findIndex((word) => word.start <= at && at < word.end);
    const word = w < 0 ? null : cue.querySelector(`[data-word="${w}"]`);
    if (word !== this.now.word) {
      this.now.word?.classList.remove("said");
      word?.classList.add("said");
      this.now.word = word;
    }
  }
}

// Scroll the list itself, never the page: the person may be watching the video above it.
function keepInView(list, item) {
  if (list.scrollHeight <= list.clientHeight) return;
  const top = item.offsetTop; // the list is the cues' offsetParent (position: relative)
  if (top < list.scrollTop || top + item.offsetHeight > list.scrollTop + list.clientHeight) {
    list.scrollTop = Math.max(0, top - list.clientHeight / 3);
  }
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
