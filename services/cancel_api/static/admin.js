// Admin view (permission `manage bpjs sync`): unsynced cancellations, retry, resolve with a note.
import { ApiError } from "./api.js";
import { t } from "./i18n.js";
import { ReportView, errorText } from "./report.js";
import { StatusStrip } from "./status.js";
import { el, formatTime, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);

export class AdminView {
  constructor(api) {
    this.api = api;
    this.items = [];
    this.visible = false;
    $("admin-filter").onchange = () => this.load();
    $("admin-refresh").onclick = () => {
      this.status.refresh();
      this.load();
    };
    this.report = new ReportView(api);
    this.status = new StatusStrip(api);
  }

  show() {
    this.visible = true;
    this.status.refresh();
    this.load();
    this.report.load();
  }

  changed() {
    if (this.visible && !$("admin-view").hidden) {
      this.status.refresh();
      this.load();
    }
  }

  async load() {
    try {
      const data = await this.api.syncList($("admin-filter").value);
      this.items = data.items;
      this.render();
    } catch (err) {
      toast("error", t("action_failed"), { detail: err.problem?.title || String(err.message) });
    }
    await this.loadQuarantined();
  }

  // Outbox events Kafka refused for good: shown only when there are some.
  async loadQuarantined() {
    let items = [];
    try {
      items = (await this.api.outboxQuarantined()).items;
    } catch {
      // the list above already reports an unreachable API
    }
    $("quarantine").hidden = items.length === 0;
    $("quarantine-table").querySelector("tbody").replaceChildren(...items.map((e) => el(
      "tr", { "data-event-id": e.event_id },
      el("td", { class: "ticket-cell" }, e.ticket_number),
      el("td", {}, e.event_type),
      el("td", { class: "num" }, String(e.attempts)),
      el("td", { class: "error-cell" }, e.last_error || "—"),
      el("td", {}, formatTime(e.quarantined_at)),
    )));
  }

  render() {
    this.report.render();
    this.status.render();
    const body = $("admin-table").querySelector("tbody");
    body.replaceChildren(...this.items.map((item) => this.row(item)));
    $("admin-empty").hidden = this.items.length > 0;
  }

  row({ queue: q, sync: s }) {
    const open = s.status === "failed" || s.status === "pending";
    const reason = [q.reason_code ? t(`reason_${q.reason_code}`) : "", q.reason_text || ""]
      .filter(Boolean).join(": ");
    const next = s.next_attempt_at ? formatTime(s.next_attempt_at) : s.will_retry ? "—" : t("no_retry");
    const error = errorText(s);
    // Only antreanrs has a read API: a job of another service can never be confirmed at BPJS.
    const confirm = s.confirmed_at ? t("confirmed_at", { at: formatTime(s.confirmed_at) })
      : s.job_recorded && s.confirmable === false && s.status !== "resolved_manually" ? t("not_confirmable") : null;
    return el(
      "tr", { "data-queue-id": String(q.id) },
      el("td", { class: "ticket-cell" }, q.ticket_number),
      el("td", {}, q.patient?.name ?? ""),
      el("td", {}, reason || "—"),
      el("td", { class: "num" }, String(s.attempts ?? 0)),
      el("td", { class: "error-cell" }, error || "—"),
      el("td", {}, next),
      el("td", {}, el("span", { class: `badge sync-${s.status}` }, t(`st_${s.status}`)),
        s.resolved_note ? el("div", { class: "note" }, `${s.resolved_by?.name ?? ""}: ${s.resolved_note}`) : null,
        confirm ? el("div", { class: "confirm-note" }, confirm) : null),
      el("td", { class: "row-actions" }, open ? [
        el("button", { type: "button", class: "btn", "data-action": "retry", onclick: () => this.retry(q) }, t("retry")),
        el("button", { type: "button", class: "btn primary", "data-action": "resolve", onclick: (e) => this.resolve(q, e.currentTarget) }, t("resolve")),
      ] : null),
    );
  }

  async retry(q) {
    try {
      const r = await this.api.syncRetry(q.id);
      toast("success", r?.message || t("retry_done"), { detail: t("ticket_ref", { ticket: q.ticket_number }) });
    } catch (err) {
      this.failed(err);
    }
    this.load();
  }

  resolve(q, opener) {
    const dialog = $("resolve");
    const note = $("resolve-note");
    $("resolve-title").textContent = t("resolve_title", { ticket: q.ticket_number });
    $("resolve-form").reset();
    dialog.returnValue = "cancel";
    dialog.onclose = async () => {
      const text = note.value.trim();
      if (dialog.returnValue !== "save" || !text) {
        opener?.focus();
        return;
      }
      try {
        const r = await this.api.syncResolve(q.id, text);
        toast("success", r?.message || t("resolve_done"), { detail: t("ticket_ref", { ticket: q.ticket_number }) });
      } catch (err) {
        this.failed(err);
      }
      await this.load();
      $("admin-refresh").focus();
    };
    dialog.showModal();
    note.focus();
  }

  failed(err) {
    const detail = err instanceof ApiError ? err.problem.detail || err.problem.title : t("connection_lost");
    toast("error", t("action_failed"), { detail });
  }
}
