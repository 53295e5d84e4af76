// colmena console: progressive enhancement only. Every page works without this file.
// A form is not sent twice by a double click: once it is on its way (the browser has read its
// fields, the pressed button's name included), its submit buttons are disabled.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) {
    return;
  }
  window.setTimeout(() => {
    for (const button of form.querySelectorAll("button[type=submit]")) {
      button.disabled = true;
    }
  }, 0);
});
// Back/forward cache: a page shown again gets its buttons back.
window.addEventListener("pageshow", () => {
  for (const button of document.querySelectorAll("button[type=submit][disabled]")) {
    button.disabled = false;
  }
});
