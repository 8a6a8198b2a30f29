// The staff token (kept for this tab only) and calls to the cancel API.
const KEY = "antrean.token";

export function takeToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const fromLink = hash.get("token");
  if (fromLink) {
    sessionStorage.setItem(KEY, fromLink);
    // The token must not stay in the address bar (history, screenshots, shoulder surfing).
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY);
}

export function claimsOf(token) {
  // Display only: the servers verify the token; the browser just needs name and permissions.
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      [...atob(part)].map((c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    const c = JSON.parse(json);
    return { ...c, permissions: Array.isArray(c.permissions) ? c.permissions : [] };
  } catch {
    return null;
  }
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, { body, headers = {}, timeoutMs = 15000 } = {}) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const response = await fetch(path, {
        method,
        headers: {
          Authorization: `Bearer ${this.token}`,
          ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
          ...headers,
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: abort.signal,
      });
      const data = await response.json().catch(() => null);
      if (!response.ok) throw new ApiError(response.status, data);
      return data;
    } finally {
      clearTimeout(timer);
    }
  }

  waiting(roomId) {
    const q = new URLSearchParams({ status: "waiting" });
    if (roomId) q.set("room_id", roomId);
    return this.request("GET", `/antrian_ruangan?${q}`);
  }

  cancel(queueId, body, idempotencyKey) {
    return this.request("POST", `/antrian_ruangan/batal/${encodeURIComponent(queueId)}`, {
      body,
      headers: { "Idempotency-Key": idempotencyKey },
    });
  }

  syncList(status) {
    return this.request("GET", `/bpjs_sync?status=${encodeURIComponent(status)}`);
  }

  syncRetry(queueId) {
    return this.request("POST", `/bpjs_sync/${encodeURIComponent(queueId)}/retry`);
  }

  report(date) {
    return this.request("GET", `/bpjs_sync/report${date ? `?date=${encodeURIComponent(date)}` : ""}`);
  }

  reconcile(date) {
    return this.request("POST", `/bpjs_sync/report/reconcile?date=${encodeURIComponent(date)}`);
  }

  // The report as CSV: fetched with the token (a plain link would carry none), saved as a file.
  async reportCsv(date) {
    const response = await fetch(`/bpjs_sync/report?date=${encodeURIComponent(date)}`, {
      headers: { Authorization: `Bearer ${this.token}`, Accept: "text/csv" },
    });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = /filename="([^"]+)"/.exec(disposition)?.[1] || `bpjs-report-${date}.csv`;
    return { blob: await response.blob(), name };
  }

  syncStatus() {
    return this.request("GET", "/bpjs_sync/status");
  }

  outboxQuarantined() {
    return this.request("GET", "/outbox/quarantined");
  }

  syncResolve(queueId, note) {
    return this.request("POST", `/bpjs_sync/${encodeURIComponent(queueId)}/resolve`, {
      body: { note },
    });
  }
}

export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}
