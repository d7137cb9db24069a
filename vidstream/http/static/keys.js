// The API key: asked for in a dialog when the gateway answers 401.

import { ApiError } from "./api.js";
import { $ } from "./dom.js";

// Asked for when a call answers 401; api.js keeps it for the tab and retries the call.
export function askForKey(gateway, rejected) {
  const dialog = $("key-dialog");
  const host = new URL(gateway).host;
  // Named, because ?gateway= can point this page anywhere: the key goes to that host only.
  $("key-reason").textContent = rejected
    ? `That key was not accepted by ${host}. Check it and try again.`
    : `${host} needs an API key. Ask its operator for one.`;
  showKeyState(false);
  $("key-input").value = "";
  dialog.showModal();
  return new Promise((resolve, reject) => {
    const decline = () => reject(new ApiError(401, "unauthorized", ""));
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      dialog.close();
      resolve($("key-input").value.trim());
      showKeyState(true);
    };
    $("key-cancel").onclick = () => { dialog.close(); decline(); };
    dialog.oncancel = decline; // Escape
  });
}

export function showKeyState(given) {
  $("key-button").textContent = given ? "API key ✓" : "API key";
}
