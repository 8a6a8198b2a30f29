// Toasts (announced through aria-live regions), the loading overlay and small DOM helpers.
import { t } from "./i18n.js";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const AUTO_HIDE_MS = { info: 5000, success: 5000, progress: 0, warning: 0, error: 8000 };

// kind: progress | success | info | warning | error. Warnings stay until dismissed.
export function toast(kind, text, { detail, sticky } = {}) {
  const urgent = kind === "warning" || kind === "error";
  const region = document.getElementById(urgent ? "alerts" : "toasts");
  const node = el(
    "div",
    { class: `toast ${kind}`, "data-kind": kind, role: urgent ? "alert" : "status" },
    el("p", { class: "toast-text" }, text),
    detail ? el("p", { class: "toast-detail" }, detail) : null,
  );
  const dismiss = () => node.remove();
  if (kind !== "progress") {
    node.append(
      el("button", { type: "button", class: "toast-close", "aria-label": t("dismiss"), onclick: dismiss },
        el("span", { "aria-hidden": "true" }, "×")),
    );
  }
  region.append(node);
  const after = sticky ? 0 : AUTO_HIDE_MS[kind];
  if (after) setTimeout(dismiss, after);
  return { node, dismiss };
}

export function busy(on) {
  document.getElementById("overlay").hidden = !on;
  document.getElementById("main").setAttribute("aria-busy", on ? "true" : "false");
}

export function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(document.documentElement.lang === "en" ? "en-GB" : "id-ID");
}
