// One confirmation dialog for every destructive action: a modal <dialog>, so focus
// stays in it, Escape closes it, and the action's own error shows inside it.
import { el } from "./dom.js";
import { ApiError } from "./api.js";

export function confirmAction(question, detail, verb, action) {
  const error = el("div", { class: "errbox", role: "alert", hidden: true });
  const yes = el("button", { type: "button", class: "danger" }, verb);
  const no = el("button", { type: "button", autofocus: true }, "Keep it");
  const dialog = el("dialog", { "aria-labelledby": "dlg-q" }, el("h2", { id: "dlg-q" }, question),
    el("p", { class: "muted" }, detail), error, el("div", { class: "row" }, yes, no));
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  no.addEventListener("click", () => dialog.close());
  yes.addEventListener("click", async () => {
    yes.disabled = true;
    try {
      await action();
      dialog.close();
    } catch (e) {
      if (!(e instanceof ApiError) || e.status === 401) { dialog.close(); throw e; }
      error.textContent = e.detail;
      error.hidden = false;
      yes.disabled = false;
    }
  });
  dialog.showModal();
}
