// The BPJS reconciliation report of a clinic day: counts per state at BPJS, the cancellations,
// a CSV download and a fresh check of BPJS's record (permission `manage bpjs sync`).
import { ApiError } from "./api.js";
import { getLang, t } from "./i18n.js";
import { el, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);
export const STATES = ["confirmed", "not_recorded", "not_confirmable", "unconfirmed", "failed",
  "pending", "resolved_manually"];

export class ReportView {
  constructor(api) {
    this.api = api;
    this.data = null;
    $("report-date").onchange = () => this.load();
    $("report-csv").onclick = () => this.download();
    $("report-reconcile").onclick = () => this.reconcile();
  }

  // Without a date the API answers yesterday in the clinic's own zone; the field then shows it.
  async load() {
    try {
      this.data = await this.api.report($("report-date").value || undefined);
      $("report-date").value = this.data.date;
      this.render();
    } catch (err) {
      this.failed(err);
    }
  }

  render() {
    const data = this.data;
    if (!data) return;
    const local = (iso) => (iso ? new Date(iso).toLocaleString(getLang() === "en" ? "en-GB" : "id-ID",
      { timeZone: data.time_zone }) : "—");
    $("report-counts").querySelector("tbody").replaceChildren(...STATES.map((state) => el(
      "tr", { "data-state": state },
      el("th", { scope: "row" }, el("span", { class: `badge report-${state}` }, t(`rs_${state}`))),
      el("td", { class: "num" }, String(data.counts[state] ?? 0)),
    )));
    $("report-table").querySelector("tbody").replaceChildren(...data.items.map((i) => el(
      "tr", { "data-queue-id": String(i.queue_id), "data-state": i.state },
      el("td", { class: "ticket-cell" }, i.ticket_number),
      el("td", {}, i.room_id),
      el("td", {}, local(i.cancelled_at)),
      el("td", {}, el("span", { class: `badge report-${i.state}` }, t(`rs_${i.state}`))),
      el("td", { class: "num" }, String(i.attempts)),
      el("td", { class: "error-cell" }, errorText(i) || "—"),
    )));
    $("report-empty").hidden = data.items.length > 0;
    const run = data.reconciliation;
    let status = t("report_zone", { zone: data.time_zone });
    if (run?.finished_at) {
      status += " " + t(run.error ? "report_run_error" : "report_run_done",
        { at: local(run.finished_at), checked: run.checked, missing: run.not_recorded });
    } else if (run) {
      status += " " + t("report_run_waiting", { at: local(run.requested_at) });
    }
    $("report-status").textContent = status;
  }

  async download() {
    const date = $("report-date").value;
    if (!date) return this.load();
    try {
      const { blob, name } = await this.api.reportCsv(date);
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (err) {
      this.failed(err);
    }
  }

  async reconcile() {
    const date = $("report-date").value;
    if (!date) return this.load();
    try {
      const r = await this.api.reconcile(date);
      toast("success", r?.message || t("report_reconcile_done"));
    } catch (err) {
      this.failed(err);
    }
    await this.load();
  }

  failed(err) {
    const detail = err instanceof ApiError ? err.problem.detail || err.problem.title : t("connection_lost");
    toast("error", t("report_failed"), { detail });
  }
}

// An error kind staff can act on, in words (with the code for the administrator).
export function errorText(s) {
  const kind = ["auth_error", "not_recorded"].includes(s.last_error_kind) ? t(`kind_${s.last_error_kind}`) : "";
  return [kind, s.last_bpjs_code, s.last_error].filter((x) => x !== null && x !== undefined && x !== "").join(" · ");
}
