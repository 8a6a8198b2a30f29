// Staff UI entry: the room's waiting tickets as cards, the cancel flow and live updates.
import { Api, ApiError, claimsOf, newKey, takeToken } from "./api.js";
import { AdminView } from "./admin.js";
import { applyStatic, getLang, setLang, t } from "./i18n.js";
import { Live } from "./live.js";
import { busy, el, toast } from "./ui.js";

const PERM_CANCEL = "cancel antrean";
const PERM_MANAGE = "manage bpjs sync";
const $ = (id) => document.getElementById(id);

const state = {
  room: new URLSearchParams(location.search).get("room") || "",
  tickets: new Map(), // queue id -> Queue
  rooms: new Set(),
  pending: new Map(), // queue id -> {key, body}: an attempt whose outcome is unknown, retried as is
  inflight: new Map(), // queue id -> promise of the running cancel request
};

function cardFor(q, canCancel) {
  return el(
    "li",
    { class: "card", "data-queue-id": String(q.id), "data-ticket": q.ticket_number },
    el("div", { class: "ticket" }, q.ticket_number),
    el("div", { class: "patient" }, q.patient?.name ?? ""),
    el("div", { class: "meta" },
      el("span", { class: `badge payer-${q.payer}` }, t(`payer_${q.payer}`)),
      state.room ? null : el("span", { class: "room" }, q.room_id)),
    canCancel
      ? el("button", {
          type: "button", class: "x", "aria-label": t("cancel_aria", { ticket: q.ticket_number }),
          onclick: () => askCancel(q.id),
        }, el("span", { "aria-hidden": "true" }, "✕"), el("span", { class: "x-label" }, t("cancel_button")))
      : null,
  );
}

// A card is rebuilt only when what it shows changed: a refetch must not detach the card (and
// the focus) under a user who is about to press its X.
function cardVersion(q, canCancel) {
  return [q.ticket_number, q.patient?.name, q.payer, q.room_id, state.room, canCancel, getLang()].join("|");
}

function render() {
  const canCancel = state.claims.permissions.includes(PERM_CANCEL);
  const list = $("cards");
  const existing = new Map([...list.children].map((c) => [c.dataset.queueId, c]));
  const nodes = [...state.tickets.values()].map((q) => {
    const version = cardVersion(q, canCancel);
    const old = existing.get(String(q.id));
    if (old && old.dataset.version === version) return old;
    const card = cardFor(q, canCancel);
    card.dataset.version = version;
    return card;
  });
  const keep = new Set(nodes);
  for (const child of [...list.children]) if (!keep.has(child)) child.remove();
  nodes.forEach((node, i) => {
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] ?? null);
  });
  $("empty").hidden = state.tickets.size > 0;
  $("room-heading").textContent = t("room_heading", { room: state.room || t("all_rooms") });
  const picker = $("room-picker");
  const rooms = [...new Set([...state.rooms, state.room].filter(Boolean))].sort();
  picker.replaceChildren(
    el("option", { value: "" }, t("all_rooms")),
    ...rooms.map((r) => el("option", { value: r }, r)),
  );
  picker.value = state.room;
}

async function loadTickets() {
  try {
    const [inRoom, all] = await Promise.all([
      state.api.waiting(state.room),
      state.room ? state.api.waiting("") : null,
    ]);
    state.tickets = new Map(inRoom.items.map((q) => [q.id, q]));
    for (const q of (all ?? inRoom).items) state.rooms.add(q.room_id);
    render();
  } catch (err) {
    toast("error", err instanceof ApiError && err.status === 401 ? t("session_invalid") : t("load_failed"));
  }
}

function removeCard(queueId) {
  if (!state.tickets.delete(queueId)) return;
  const card = document.querySelector(`.card[data-queue-id="${queueId}"]`);
  const focusWasInside = card?.contains(document.activeElement);
  const next = card?.nextElementSibling || card?.previousElementSibling;
  card?.remove();
  $("empty").hidden = state.tickets.size > 0;
  if (focusWasInside) (next?.querySelector("button") || $("cards")).focus();
}

function askCancel(queueId) {
  const q = state.tickets.get(queueId);
  if (!q) return;
  const dialog = $("confirm");
  const form = $("confirm-form");
  const retry = state.pending.get(queueId);
  $("confirm-title").textContent = t("confirm_title", { ticket: q.ticket_number });
  form.reset();
  if (retry) {
    form.querySelector(`input[name=reason][value="${retry.body.reason_code}"]`).checked = true;
    $("reason-text").value = retry.body.reason_text ?? "";
  }
  // A retry must send the very same request (same Idempotency-Key and body).
  $("reason-set").disabled = Boolean(retry);
  dialog.returnValue = "no";
  dialog.onclose = () => {
    const opener = document.querySelector(`.card[data-queue-id="${queueId}"] button.x`);
    // The ticket as the user confirmed it: a live update may remove its card meanwhile.
    if (dialog.returnValue === "yes") confirmCancel(q, opener);
    else opener?.focus();
  };
  dialog.showModal();
  $("confirm-no").focus();
}

async function confirmCancel(q, opener) {
  const queueId = q.id;
  let attempt = state.pending.get(queueId);
  if (!attempt) {
    const data = new FormData($("confirm-form"));
    const text = String(data.get("reason_text") || "").trim();
    attempt = { key: newKey(), body: { reason_code: data.get("reason") || "other", reason_text: text || null } };
    state.pending.set(queueId, attempt);
  }
  const progress = toast("progress", t("progress"));
  busy(true);
  const run = state.api.cancel(queueId, attempt.body, attempt.key);
  state.inflight.set(queueId, run.catch(() => {}));
  try {
    await run;
    state.pending.delete(queueId);
    removeCard(queueId);
    toast("success", t("success"), { detail: t("ticket_ref", { ticket: q.ticket_number }) });
  } catch (err) {
    if (err instanceof ApiError) {
      // A 4xx is a known outcome; after a 5xx (refused while busy, or unknown) the next click
      // must resend the very same request, so the key is kept.
      if (err.status < 500) state.pending.delete(queueId);
      const detail = err.problem.detail || (err.problem.title !== t("failure") ? err.problem.title : "");
      toast("error", t("failure"), { detail });
    } else {
      toast("error", t("connection_lost"), { detail: t("ticket_ref", { ticket: q.ticket_number }) });
    }
    opener?.focus();
  } finally {
    progress.dismiss();
    busy(false);
    state.inflight.delete(queueId);
  }
}

async function onLive(msg) {
  if (msg.type === "queue.cancelled") {
    if (!state.room || msg.room_id === state.room) removeCard(msg.queue_id);
    return;
  }
  // The success toast of our own request comes first, then the BPJS outcome.
  await state.inflight.get(msg.queue_id);
  if (msg.type === "bpjs.sync_failed") {
    const text = getLang() === "id" ? msg.message : t("bpjs_warning");
    toast("warning", text, { detail: t("ticket_ref", { ticket: msg.ticket_number }), sticky: true });
  } else if (msg.type === "bpjs.synced" && msg.recovered) {
    toast("info", t("bpjs_recovered", { ticket: msg.ticket_number }));
  }
  state.admin?.changed();
}

function showConnection(kind) {
  const conn = $("conn");
  conn.dataset.state = kind;
  conn.textContent = t(`conn_${kind}`);
}

function switchRoom(room) {
  state.room = room;
  const url = new URL(location.href);
  if (room) url.searchParams.set("room", room);
  else url.searchParams.delete("room");
  history.replaceState(null, "", url.pathname + url.search);
  state.live?.subscribe(room ? [room] : null);
  loadTickets();
}

function showView(admin) {
  $("room-view").hidden = admin;
  $("admin-view").hidden = !admin;
  $("tab-room").setAttribute("aria-pressed", String(!admin));
  $("tab-admin").setAttribute("aria-pressed", String(admin));
  if (admin) state.admin.show();
}

async function main() {
  setLang(getLang());
  $("lang").value = getLang();
  $("lang").onchange = (e) => {
    setLang(e.target.value);
    render();
    showConnection($("conn").dataset.state);
    state.admin?.render();
  };
  const token = takeToken();
  state.claims = token ? claimsOf(token) : null;
  if (!state.claims) {
    $("notice").hidden = false;
    $("notice").textContent = t("no_token");
    $("room-view").hidden = true;
    return;
  }
  state.api = new Api(token);
  $("who").textContent = `${state.claims.name} · ${state.claims.clinic_id}`;
  $("room-picker").onchange = (e) => switchRoom(e.target.value);
  // Enter in the reason text must not confirm a permanent cancellation by accident.
  $("reason-text").onkeydown = (e) => {
    if (e.key === "Enter") e.preventDefault();
  };
  if (state.claims.permissions.includes(PERM_MANAGE)) {
    state.admin = new AdminView(state.api);
    $("tab-admin").hidden = false;
    $("tab-admin").onclick = () => showView(true);
    $("tab-room").onclick = () => showView(false);
  }
  applyStatic();
  await loadTickets();
  const config = await fetch("/ui/config").then((r) => r.json());
  state.live = new Live({
    url: config.notifier_url,
    token,
    rooms: state.room ? [state.room] : null,
    onMessage: onLive,
    onState: showConnection,
    onReconnected: () => {
      loadTickets(); // whatever happened while we were away
      state.admin?.changed();
    },
    onResync: () => {
      loadTickets(); // the notifier could not replay what we missed
      state.admin?.changed();
    },
  });
  state.live.start();
}

main();
