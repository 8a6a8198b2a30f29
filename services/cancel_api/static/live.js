// Websocket client of the notifier (docs/WEBSOCKET.md): auth, subscribe, resume, resync, heartbeats, back-off.
const CURSOR_KEY = "antrean.cursor";
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;

export class Live {
  constructor({ url, token, rooms, onMessage, onState, onReconnected, onResync }) {
    Object.assign(this, { url, token, rooms, onMessage, onState, onReconnected, onResync });
    this.cursor = sessionStorage.getItem(CURSOR_KEY);
    this.attempt = 0;
    this.everReady = false;
    this.stopped = false;
  }

  start() {
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: this.token }));
    ws.onmessage = (e) => this.receive(JSON.parse(e.data));
    ws.onclose = (e) => this.closed(e.code);
    ws.onerror = () => {};
  }

  receive(msg) {
    this.lastHeard = Date.now();
    if (msg.type === "ready") {
      this.readyCursor = msg.cursor;
      this.sendSubscribe();
      if (!this.cursor) this.keep(msg.cursor);
      // Always resume (even from `ready`'s own cursor): it ends the server's resume window at once.
      this.ws.send(JSON.stringify({ type: "resume", cursor: this.cursor }));
      const again = this.everReady;
      this.everReady = true;
      this.attempt = 0;
      this.onState("live");
      this.heartbeat();
      if (again) this.onReconnected();
      return;
    }
    if (msg.type === "resync") {
      // The server will not replay from our cursor (too old, or not a cursor): start again
      // from this connection's `ready` and reload the list instead.
      this.keep(this.readyCursor);
      this.onResync();
      return;
    }
    if (msg.type === "pong" || msg.type === "error") return;
    if (msg.cursor) this.keep(msg.cursor);
    this.onMessage(msg);
  }

  keep(cursor) {
    this.cursor = cursor;
    sessionStorage.setItem(CURSOR_KEY, cursor);
  }

  subscribe(rooms) {
    this.rooms = rooms;
    this.sendSubscribe();
  }

  sendSubscribe() {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({ type: "subscribe", room_ids: this.rooms }));
  }

  heartbeat() {
    clearInterval(this.pinger);
    this.pinger = setInterval(() => {
      if (this.ws?.readyState !== WebSocket.OPEN) return;
      const sentAt = Date.now();
      this.ws.send(JSON.stringify({ type: "ping" }));
      setTimeout(() => {
        if (this.lastHeard < sentAt && this.ws?.readyState === WebSocket.OPEN) this.ws.close();
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  closed(code) {
    clearInterval(this.pinger);
    if (this.stopped) return;
    // Only a refused token is final; 1013 (not ready, identity provider down), 4408 (too slow)
    // and 4429 (too many connections) are retried with back-off like a lost connection.
    if (code === 4401 || code === 4403) {
      this.onState("denied");
      return;
    }
    this.onState("offline");
    const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    setTimeout(() => this.start(), delay);
  }
}
