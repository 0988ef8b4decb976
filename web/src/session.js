// The link to parleyd over WebSocket, as the terminal client's sess.c keeps
// it: Hello, then Resume with the session token after any reconnect; sends
// kept with their client_msg_id until send_ok or a final error and written
// again, unchanged, after a reconnect (the server stores each once); an Ack
// per conversation for what was received; repeats dropped by msgid.
//
// Events (on(name, fn)): state(state), login(loginOk, how), loggedout(why),
// message(msg), recall(ev), presence(ev), group_deleted(ev), push(frame),
// sent(entry, sendOk), sendfailed(entry, error), pending(list), bye(reason).
import { encodeClient, decodeServer } from "./proto.js";
import { newClientMsgId } from "./idgen.js";

const PROTOCOL_VERSION = 1;
const REQUEST_TIMEOUT_MS = 15000;
const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 8000;
const SEND_TRIES = 5;
const SEEN_MAX = 5000;

export class ProtocolError extends Error {
  constructor(code, text, retryAfterMs) {
    super(text ? code + ": " + text : code);
    this.code = code;
    this.text = text || "";
    this.retryAfterMs = retryAfterMs || 0; // BUSY: when to try again
  }
}

export class Session {
  /** url: the WebSocket address; store: a Storage (sessionStorage) that
   * keeps the token and unconfirmed sends across a reload of the page. */
  constructor(url, store) {
    this.url = url;
    this.store = store;
    this.ws = null;
    this.state = "offline"; // offline | connecting | online
    this.ready = false; // hello answered (and resumed, if there was a token)
    this.nextId = 1;
    this.waiting = new Map(); // request id -> {resolve, reject, timer}
    this.handlers = new Map();
    this.acks = new Map(); // conv -> {shown, acked}
    this.seen = new Set();
    this.backoff = BACKOFF_START_MS;
    this.retryTimer = null;
    this.pingTimer = null;
    this.idleMs = 60000;
    this.maxFrame = 65536;
    this.readyWaiters = [];
    this.lastTx = 0;
    this.pingOut = null;
    this.token = store.getItem("parley.token") || "";
    this.me = null;
    if (this.token) {
      try {
        this.me = JSON.parse(store.getItem("parley.me") || "null");
      } catch {}
    }
    try {
      this.sends = JSON.parse(store.getItem("parley.sends") || "[]");
    } catch {
      this.sends = [];
    }
    // Kept across a reload: sent again, with their ids, once resumed.
    this.sends = this.sends.map((s) => ({ ...s, onWire: false, tries: 0, busy: 0, resendAt: 0 }));
  }

  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(fn);
  }

  emit(name, ...args) {
    for (const fn of this.handlers.get(name) || []) {
      try {
        fn(...args);
      } catch (e) {
        console.error(e);
      }
    }
  }

  get loggedIn() {
    return !!this.me;
  }

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.emit("state", s);
  }

  saveSends() {
    const keep = this.sends.map(({ kind, target, body, attachment, cmid, local }) => ({ kind, target, body, attachment, cmid, local }));
    this.store.setItem("parley.sends", JSON.stringify(keep));
    this.emit("pending", this.sends);
  }

  setToken(t) {
    this.token = t || "";
    if (this.token) this.store.setItem("parley.token", this.token);
    else this.store.removeItem("parley.token");
  }

  // ---- the connection ----

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ws) return;
    this.setState("connecting");
    this.ready = false;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.scheduleRetry();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => this.handshake(ws);
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      if (!(ev.data instanceof ArrayBuffer)) return; // the server sends binary only
      let f;
      try {
        f = decodeServer(ev.data);
      } catch (e) {
        console.warn("undecodable frame", e);
        return;
      }
      this.handle(f);
    };
    ws.onclose = () => {
      if (ws === this.ws) this.dropped();
    };
    ws.onerror = () => {}; // onclose follows and says what to do
  }

  /** Closes the link now and reconnects soon (a dead server, a bye). */
  reconnectNow() {
    if (this.ws) {
      const ws = this.ws;
      this.dropped();
      try {
        ws.close();
      } catch {}
    }
  }

  dropped() {
    this.ws = null;
    this.ready = false;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.pingOut = null;
    // Requests in flight fail; sends stay and go again once resumed.
    for (const [id, w] of this.waiting) {
      clearTimeout(w.timer);
      w.reject(new ProtocolError("UNAVAILABLE", "connection lost"));
    }
    this.waiting.clear();
    // Kept across a reload: sent again, with their ids, once resumed.
    this.sends = this.sends.map((s) => ({ ...s, onWire: false, tries: 0, busy: 0, resendAt: 0 }));
    this.setState("offline");
    this.scheduleRetry();
  }

  scheduleRetry() {
    if (this.retryTimer) return;
    const wait = this.backoff / 2 + Math.random() * this.backoff;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.nextTry = Date.now() + wait;
    this.emit("state", "offline");
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, wait);
  }

  write(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(encodeClient(frame));
    this.lastTx = Date.now();
    return true;
  }

  async handshake(ws) {
    try {
      const hello = await this.rawRequest({ hello: { version: PROTOCOL_VERSION, client: "parley-web/0.1" } });
      if (hello.hello_ok.idle_timeout_ms) this.idleMs = hello.hello_ok.idle_timeout_ms;
      if (hello.hello_ok.max_frame) this.maxFrame = hello.hello_ok.max_frame;
      if (ws !== this.ws) return;
      let how = null;
      let login = null;
      if (this.token) {
        try {
          login = (await this.rawRequest({ resume: { token: this.token } })).login_ok;
          how = "resumed";
        } catch (e) {
          if (e.code === "UNAVAILABLE" && ws !== this.ws) return;
          this.forgetLogin("your session could not be resumed (" + e.message + ")");
        }
      }
      if (ws !== this.ws) return;
      this.ready = true;
      this.backoff = BACKOFF_START_MS;
      this.startPings();
      this.setState("online");
      if (login) this.loggedIn_(login, how);
    } catch (e) {
      // The hello failed: the link is useless; try again later.
      if (ws === this.ws) this.reconnectNow();
    }
  }

  startPings() {
    clearInterval(this.pingTimer);
    this.lastTx = Date.now();
    const every = Math.max(1000, Math.min(20000, this.idleMs / 3));
    this.pingTimer = setInterval(() => {
      const now = Date.now();
      if (this.pingOut && now - this.pingOut > REQUEST_TIMEOUT_MS) {
        this.reconnectNow(); // the server stopped answering
        return;
      }
      if (!this.pingOut && now - this.lastTx >= every) {
        this.pingOut = now;
        this.rawRequest({ ping: { nonce: now } }).then(
          () => (this.pingOut = null),
          () => {}
        );
      }
    }, 1000);
  }

  loggedIn_(login, how) {
    this.me = { id: login.user.id, name: login.user.name };
    if (login.token) this.setToken(login.token);
    this.store.setItem("parley.me", JSON.stringify(this.me));
    this.emit("login", login, how);
    this.flushAcks();
    this.sendDue();
    for (const w of this.readyWaiters.splice(0)) w.resolve();
  }

  /** Resolves once the link is up and logged in (at once if it is). */
  whenReady() {
    if (this.ready && this.me) return Promise.resolve();
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  forgetLogin(why) {
    const failed = this.sends;
    this.sends = [];
    this.saveSends();
    for (const s of failed) this.emit("sendfailed", s, new ProtocolError("UNAUTHENTICATED", "the session it was typed in has ended"));
    this.me = null;
    this.seen.clear();
    this.setToken("");
    this.store.removeItem("parley.me");
    this.acks.clear();
    for (const w of this.readyWaiters.splice(0)) w.reject(new Error("logged out"));
    this.emit("loggedout", why);
  }

  // ---- requests ----

  /** Sends one request; resolves with the reply frame, rejects with a
   * ProtocolError (the server's error, or UNAVAILABLE when the link drops). */
  rawRequest(body) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      if (!this.write({ id, ...body })) {
        reject(new ProtocolError("UNAVAILABLE", "not connected to the server"));
        return;
      }
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new ProtocolError("UNAVAILABLE", "no answer from the server"));
      }, REQUEST_TIMEOUT_MS);
      this.waiting.set(id, { resolve, reject, timer });
    });
  }

  /** A request once the link is ready (hello done). */
  request(body) {
    if (!this.ready) return Promise.reject(new ProtocolError("UNAVAILABLE", "not connected to the server"));
    return this.rawRequest(body);
  }

  async register(name, password) {
    return (await this.request({ reg: { name, password } })).register_ok.user_id;
  }

  async login(name, password) {
    const f = await this.request({ login: { name, password } });
    this.loggedIn_(f.login_ok, "login");
    return f.login_ok;
  }

  async logout() {
    try {
      await this.request({ logout: {} });
    } finally {
      this.forgetLogin("");
    }
  }

  // ---- sends ----

  /** A direct (kind "direct", target a user id) or group message: kept until
   * confirmed, written again after a reconnect with the same client_msg_id.
   * Returns the entry; the "sent" or "sendfailed" event ends it. */
  send(kind, target, body, attachment) {
    const entry = { kind, target, body, attachment: attachment || null, cmid: newClientMsgId(), local: "l" + Date.now() + Math.random(), onWire: false, tries: 0, busy: 0, resendAt: 0 };
    this.sends.push(entry);
    this.saveSends();
    this.sendDue();
    return entry;
  }

  sendDue() {
    if (!this.ready || !this.me) return;
    const now = Date.now();
    for (const s of this.sends) {
      if (s.onWire || s.resendAt > now) continue;
      this.writeSend(s);
    }
  }

  writeSend(s) {
    const id = this.nextId++;
    const msg = { body: s.body, client_msg_id: s.cmid };
    if (s.attachment) msg.attachment = { sha256: s.attachment.sha256 }; // base64: fromObject decodes it
    const body = s.kind === "group" ? { send_group: { group_id: s.target, ...msg } } : { send_direct: { to: s.target, ...msg } };
    if (!this.write({ id, ...body })) return;
    s.onWire = true;
    s.reqId = id;
    clearTimeout(s.timer);
    // No answer in time: the same send again (harmless, it has its id).
    s.timer = setTimeout(() => {
      if (s.reqId === id && s.onWire) {
        s.onWire = false;
        this.sendDue();
      }
    }, REQUEST_TIMEOUT_MS);
  }

  sendReply(s, f) {
    clearTimeout(s.timer);
    if (!f.error) {
      this.sends = this.sends.filter((x) => x !== s);
      this.saveSends();
      this.emit("sent", s, f.send_ok);
      return;
    }
    const code = f.error.code;
    let wait = -1;
    if (code === "BUSY" && s.busy < 10) {
      s.busy++;
      wait = f.error.retry_after_ms || 200;
    } else if (code === "CONFLICT" && s.tries + 1 < SEND_TRIES) {
      // The id names another message: this one was not stored under it.
      s.tries++;
      s.cmid = newClientMsgId();
      this.saveSends();
      wait = 0;
    } else if ((code === "UNAVAILABLE" || code === "INTERNAL") && s.tries + 1 < SEND_TRIES) {
      wait = 200 << s.tries;
      s.tries++;
    }
    s.onWire = false;
    if (wait >= 0) {
      s.resendAt = Date.now() + wait;
      setTimeout(() => this.sendDue(), wait);
      return;
    }
    this.sends = this.sends.filter((x) => x !== s);
    this.saveSends();
    this.emit("sendfailed", s, new ProtocolError(code, f.error.text));
  }

  // ---- what the server sends ----

  handle(f) {
    if (f.id !== "0") {
      const id = Number(f.id);
      const s = this.sends.find((x) => x.reqId === id);
      if (s) {
        if (s.onWire) this.sendReply(s, f);
        return;
      }
      const w = this.waiting.get(id);
      if (!w) return; // a reply to a request that timed out
      this.waiting.delete(id);
      clearTimeout(w.timer);
      if (f.error) w.reject(new ProtocolError(f.error.code, f.error.text, f.error.retry_after_ms));
      else w.resolve(f);
      return;
    }
    if (f.error) {
      console.warn("server error", f.error);
      return;
    }
    switch (f.body) {
      case "message": {
        const m = f.message;
        // Acknowledge repeats too: the server sent it again because it has
        // not seen our ack.
        this.noteAck(m.conv, m.seq);
        if (this.seen.has(m.msgid)) return;
        this.seen.add(m.msgid);
        if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.values().next().value);
        this.emit("message", m);
        break;
      }
      case "recall_event":
        this.emit("recall", f.recall_event);
        break;
      case "presence":
        this.emit("presence", f.presence);
        break;
      case "group_deleted":
        this.emit("group_deleted", f.group_deleted);
        break;
      case "bye":
        // A restart or a drain: the link closes; reconnect and resume.
        this.emit("bye", f.bye.reason);
        break;
      default:
        this.emit("push", f);
    }
  }

  noteAck(conv, seq) {
    const n = Number(seq);
    let a = this.acks.get(conv);
    if (!a) this.acks.set(conv, (a = { shown: 0, acked: 0 }));
    if (n > a.shown) a.shown = n;
    a.due = true;
    if (!this.ackTimer) this.ackTimer = setTimeout(() => this.flushAcks(), 20);
  }

  /** One Ack per conversation for everything received since the last. A
   * repeat at or below what was acked is acked again (the server asked). */
  flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (!this.ready || !this.me) return;
    for (const [conv, a] of this.acks) {
      if (!a.due) continue;
      const seq = Math.max(a.shown, a.acked);
      if (this.write({ id: 0, ack: { conv, seq: String(seq) } })) {
        a.acked = seq;
        a.due = false;
      }
    }
  }
}
