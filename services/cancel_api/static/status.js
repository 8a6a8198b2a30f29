// Status strip of the admin view: BPJS reachable, breaker open (since) or workers unknown, the
// oldest unsynced cancellation and dead letters, from GET /bpjs_sync/status (the same numbers as
// the worker's metrics). Refreshed every 15 s while shown, and on BPJS events.
import { t } from "./i18n.js";

const REFRESH_MS = 15000;
const ICONS = { reachable: "✓", breaker_open: "⚠", unknown: "?", error: "?" };
const $ = (id) => document.getElementById(id);

// "3 jam 5 menit": minutes are enough for staff, and the text changes (and is re-read by a
// screen reader) at most once a minute.
export function ageText(seconds) {
  const m = Math.floor(seconds / 60);
  if (m < 1) return t("age_now");
  if (m < 60) return t("age_m", { m });
  const h = Math.floor(m / 60);
  if (h < 24) return t("age_hm", { h, m: m % 60 });
  return t("age_dh", { d: Math.floor(h / 24), h: h % 24 });
}

function clock(iso) {
  const d = new Date(iso);
  const lang = document.documentElement.lang === "en" ? "en-GB" : "id-ID";
  const sameDay = d.toDateString() === new Date().toDateString();
  const opts = { hour: "2-digit", minute: "2-digit", ...(sameDay ? {} : { day: "numeric", month: "short" }) };
  return d.toLocaleString(lang, opts);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text; // unchanged: nothing re-announced
}

export class StatusStrip {
  constructor(api) {
    this.api = api;
    this.data = null;
    this.failed = false;
    this.timer = 0;
    document.addEventListener("visibilitychange", () => this.refresh());
  }

  visible() {
    return !$("admin-view").hidden && document.visibilityState === "visible";
  }

  async refresh() {
    clearTimeout(this.timer);
    if (!this.visible()) return; // hidden: no polling; showing the view refreshes again
    try {
      this.data = await this.api.syncStatus();
      this.failed = false;
    } catch {
      this.failed = true; // the last numbers stay, marked as not current
    }
    this.render();
    clearTimeout(this.timer);
    if (this.visible()) this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  render() {
    const s = this.data;
    const state = this.failed && !s ? "error" : s ? s.bpjs : "loading";
    const bpjs = $("status-bpjs");
    bpjs.dataset.state = state;
    setText(bpjs.querySelector(".status-icon"), ICONS[state] ?? "");
    let text = t("status_loading");
    if (state === "reachable") text = t("status_reachable");
    else if (state === "breaker_open") text = t("status_breaker_open", { time: clock(s.since) });
    else if (state === "unknown") {
      text = s.last_heartbeat_at
        ? t("status_unknown_since", { time: clock(s.last_heartbeat_at) })
        : t("status_unknown");
    } else if (state === "error") text = t("status_failed");
    if (this.failed && s) text += ` (${t("status_stale")})`;
    setText(bpjs.querySelector(".status-text"), text);
    if (!s) return;
    const o = s.oldest_unsynced;
    setText($("status-oldest"), o
      ? t("status_oldest", { ticket: o.ticket_number, age: ageText(o.age_seconds), n: s.counts.unsynced, failed: s.counts.failed })
      : t("status_all_synced"));
    $("status-oldest").dataset.state = o ? "behind" : "ok";
    setText($("status-dead"), t("status_dead_letters", { n: s.dead_letters }));
    $("status-dead").dataset.state = s.dead_letters > 0 ? "behind" : "ok";
  }
}
