// Parley's browser client: the page's state and what the user sees. The
// link to the server (resume, exactly-once sends, acks) is session.js.
import { Session } from "./session.js";
import { el, fmtTime, clear } from "./dom.js";
import { upload, download, fmtSize } from "./files.js";
import { has } from "./proto.js";
import { HAS_READ, HAS_UNREAD, HAS_TYPING, socialText, Typing } from "./people.js";

const HAS_FILES = has("parley.ClientFrame", "file_begin") && has("parley.Message", "attachment");

const $ = (id) => document.getElementById(id);
const RECALL_WINDOW_MS = 2 * 60 * 1000;
const HISTORY_PAGE = 30;

function wsUrl() {
  const q = new URLSearchParams(location.search).get("ws");
  if (q) return q;
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
}

const session = new Session(wsUrl(), window.sessionStorage);

const state = {
  me: null, // {id, name}
  users: new Map(), // id -> {id, name, online, friend}
  groups: new Map(), // id -> {id, name, desc, members}
  convs: new Map(), // key -> conversation
  active: null, // key of the open conversation
};

// ---- conversations ----

function convKey(kind, id) {
  return (kind === "group" ? "g" : "u") + id;
}

function conv(kind, id) {
  const key = convKey(kind, id);
  let c = state.convs.get(key);
  if (!c) {
    c = { key, kind, id, convId: null, msgs: new Map(), unread: 0, loaded: false, noMore: false, loading: false };
    c.unreadFloor = 0; // messages up to this seq were counted by login_ok's unread
    c.readSent = 0; // the read cursor this page has told the server
    c.readBy = new Map(); // user id -> {seq, name}: how far others have read
    state.convs.set(key, c);
  }
  return c;
}

function convTitle(c) {
  if (c.kind === "group") return state.groups.get(c.id)?.name || c.name || "group " + c.id;
  return state.users.get(c.id)?.name || c.name || "user " + c.id;
}

function userName(id, hint) {
  if (state.me && id === state.me.id) return "you";
  return state.users.get(id)?.name || hint || "user " + id;
}

/** The conversation a message belongs to, learning names on the way. */
function convOf(m) {
  if (m.group !== "0") {
    const c = conv("group", m.group);
    if (m.group_name) c.name = m.group_name;
    return c;
  }
  const peer = state.me && m.from === state.me.id ? m.to : m.from;
  const c = conv("direct", peer);
  if (m.from === peer && m.from_name) {
    c.name = m.from_name;
    const u = state.users.get(peer);
    if (u && !u.name) u.name = m.from_name;
  }
  return c;
}

/** Adds (or updates) a stored message; returns whether it is new. */
function addMessage(m) {
  const c = convOf(m);
  if (m.conv && m.conv !== "0") c.convId = m.conv;
  const old = c.msgs.get(m.msgid);
  c.msgs.set(m.msgid, old ? { ...old, ...m } : m);
  return { c, isNew: !old };
}

// ---- the title and the lists ----

function totalUnread() {
  let n = 0;
  for (const c of state.convs.values()) n += c.unread;
  return n;
}

function updateTitle() {
  const n = totalUnread();
  const base = state.me ? "Parley: " + state.me.name : "Parley";
  document.title = n > 0 ? `(${n}) ${base}` : base;
}

function convButton(c, extra) {
  const label = convTitle(c);
  const b = el("button", { type: "button", class: "conv-item", "data-key": c.key }, [
    extra || null,
    el("span", { class: "conv-name" }, [label]),
    c.unread > 0 ? el("span", { class: "badge", "aria-label": c.unread + " unread" }, [String(c.unread)]) : null,
  ]);
  if (c.key === state.active) b.setAttribute("aria-current", "true");
  b.addEventListener("click", () => openConv(c.key, true));
  return el("li", {}, [b]);
}

function renderLists() {
  const people = $("people");
  const focused = document.activeElement?.dataset?.key;
  clear(people);
  const direct = new Set();
  for (const u of [...state.users.values()].filter((x) => x.friend).sort((a, b) => a.name.localeCompare(b.name))) {
    const c = conv("direct", u.id);
    direct.add(c.key);
    const dot = el("span", { class: "presence " + (u.online ? "on" : "off") }, [
      el("span", { class: "sr-only" }, [u.online ? "online, " : "offline, "]),
    ]);
    people.append(convButton(c, dot));
  }
  for (const c of state.convs.values()) {
    if (c.kind === "direct" && !direct.has(c.key)) people.append(convButton(c, el("span", { class: "presence unknown" })));
  }
  if (!people.children.length) people.append(el("li", { class: "empty" }, ["No friends yet: add one below."]));

  const groups = $("groups");
  clear(groups);
  for (const g of [...state.groups.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    groups.append(convButton(conv("group", g.id), el("span", { class: "gid" }, ["#" + g.id + " "])));
  }
  for (const c of state.convs.values()) {
    if (c.kind === "group" && !state.groups.has(c.id)) groups.append(convButton(c));
  }
  if (!groups.children.length) groups.append(el("li", { class: "empty" }, ["No groups yet."]));
  if (focused) document.querySelector(`.conv-item[data-key="${focused}"]`)?.focus();
  updateTitle();
}

// ---- the open conversation ----

function pendingFor(c) {
  return session.sends.filter((s) => (s.kind === "group" ? "g" : "u") + s.target === c.key);
}

function messageItem(c, m) {
  const mine = state.me && m.from === state.me.id;
  const social = socialText(m, userName, c.kind === "direct" ? convTitle(c) : "");
  if (social) {
    const ts = Number(m.ts);
    return el("li", { class: "msg system", "data-msgid": m.msgid, "data-seq": m.seq }, [
      el("time", { datetime: new Date(ts).toISOString() }, [fmtTime(ts)]),
      " ",
      el("span", { class: "body" }, [social]),
    ]);
  }
  const li = el("li", { class: "msg" + (mine ? " mine" : ""), "data-msgid": m.msgid, "data-seq": m.seq });
  const who = el("span", { class: "from" }, [userName(m.from, m.from_name)]);
  const ts = Number(m.ts);
  const time = el("time", { datetime: new Date(ts).toISOString() }, [fmtTime(ts)]);
  const body = m.recalled
    ? el("span", { class: "body recalled" }, ["(recalled)"])
    : el("span", { class: "body" }, [m.body]);
  li.append(who, " ", time, " ", body);
  if (m.attachment && m.attachment.name !== undefined && !m.recalled) li.append(attachmentView(m));
  if (mine && !m.recalled) {
    li.append(" ", el("span", { class: "status" }, [readStatus(c, m)]));
    if (Date.now() - ts < RECALL_WINDOW_MS) {
      const b = el("button", { type: "button", class: "recall", "aria-label": "Recall this message" }, ["Recall"]);
      b.addEventListener("click", () => recall(m.msgid, b));
      li.append(" ", b);
    }
  }
  return li;
}

/** "sent", or who has read it: "read" (direct), "read by bob, carol". */
function readStatus(c, m) {
  const seq = Number(m.seq);
  const readers = [...c.readBy.entries()].filter(([u, r]) => r.seq >= seq && u !== state.me.id);
  if (!readers.length) return "sent";
  if (c.kind === "direct") return "read";
  return "read by " + readers.map(([u, r]) => userName(u, r.name)).join(", ");
}

// ---- read state and typing (people.js) ----

/** Tells the server what the user has seen of the open conversation. */
function markRead(c) {
  if (!HAS_READ || !c || !c.convId || document.hidden || state.active !== c.key || !session.ready) return;
  let top = 0;
  for (const m of c.msgs.values()) if (Number(m.seq) > top) top = Number(m.seq);
  if (top <= c.readSent) return;
  const before = c.readSent;
  c.readSent = top;
  session.request({ read: { conv: c.convId, seq: String(top) } }).catch(() => {
    if (c.readSent === top) c.readSent = before; // told again with the next message
  });
}

const typing = new Typing((key) => {
  if (key === state.active) $("typing").textContent = typing.text(key);
});

function onReadEvent(ev) {
  let c = null;
  for (const x of state.convs.values()) if (x.convId === ev.conv) c = x;
  if (!c && ev.group !== "0") c = conv("group", ev.group);
  if (!c && state.me && ev.user !== state.me.id) c = conv("direct", ev.user);
  if (!c) return;
  const seq = Number(ev.seq);
  if (state.me && ev.user === state.me.id) {
    // Read on another device of mine: what is up to seq is not unread here.
    c.readSent = Math.max(c.readSent, seq);
    let left = 0;
    for (const m of c.msgs.values()) if (m.from !== state.me.id && Number(m.seq) > seq) left++;
    c.unread = Math.min(c.unread, left);
    renderLists();
    return;
  }
  const old = c.readBy.get(ev.user);
  if (!old || old.seq < seq) c.readBy.set(ev.user, { seq, name: ev.user_name });
  if (c.key === state.active) renderConv(false);
}

let listsTimer = null;
function refreshListsSoon() {
  clearTimeout(listsTimer);
  listsTimer = setTimeout(() => refreshLists().catch(() => {}), 200);
}

// ---- attachments ----

const fileUrls = new Map(); // msgid -> Promise of an object URL

function fileUrl(msgid, type) {
  if (!fileUrls.has(msgid)) {
    const p = download(session, msgid, type).then((b) => URL.createObjectURL(b));
    p.catch(() => fileUrls.delete(msgid));
    fileUrls.set(msgid, p);
  }
  return fileUrls.get(msgid);
}

function attachmentView(m) {
  const a = m.attachment;
  const label = `${a.name} (${fmtSize(a.size)})`;
  if (a.type && a.type.startsWith("image/")) {
    const img = el("img", { class: "attach-img", alt: "Image: " + a.name });
    // A picture that loads grows its message: stay at the bottom if there.
    img.addEventListener("load", () => {
      if (stickBottom) $("scroller").scrollTop = $("scroller").scrollHeight;
    });
    fileUrl(m.msgid, a.type).then(
      (u) => (img.src = u),
      (e) => img.replaceWith(el("span", { class: "attach-err" }, [`${label}: ${e.message}`]))
    );
    return el("figure", { class: "attach" }, [img, el("figcaption", {}, [label])]);
  }
  const b = el("button", { type: "button", class: "attach-file" }, ["Download " + label]);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      const a2 = el("a", { href: await fileUrl(m.msgid, a.type), download: a.name });
      document.body.append(a2);
      a2.click();
      a2.remove();
    } catch (e) {
      note("Download: " + e.message);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

async function attachFile(file) {
  const c = state.convs.get(state.active);
  if (!c || !file) return;
  const st = $("upload-status");
  const text = $("text").value;
  $("text").value = "";
  try {
    const att = await upload(session, file, (f) => (st.textContent = `Uploading ${file.name}: ${Math.floor(f * 100)}%`));
    st.textContent = `Uploaded ${file.name}.`;
    session.send(c.kind, c.id, text, att);
    if (state.active === c.key) renderConv(false);
  } catch (e) {
    st.textContent = `Could not send ${file.name}: ${e.message}`;
    if (!$("text").value) $("text").value = text;
  }
}

function pendingItem(s) {
  return el("li", { class: "msg mine pending", "data-local": s.local }, [
    el("span", { class: "from" }, ["you"]),
    " ",
    el("span", { class: "body" }, [s.body]),
    s.attachment ? el("span", { class: "attach-pending" }, [`${s.attachment.name} (${fmtSize(s.attachment.size)})`]) : null,
    " ",
    el("span", { class: "status" }, [session.state === "online" ? "sending…" : "waiting for the connection"]),
  ]);
}

function sortedMsgs(c) {
  return [...c.msgs.values()].sort((a, b) => Number(a.seq) - Number(b.seq) || Number(a.msgid) - Number(b.msgid));
}

/** Redraws the open conversation; keeps the view at the bottom if it was. */
function renderConv(keepAnchor) {
  const list = $("messages");
  const c = state.convs.get(state.active);
  const scroller = $("scroller");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const oldHeight = scroller.scrollHeight;
  list.setAttribute("aria-busy", "true");
  clear(list);
  if (!c) {
    list.removeAttribute("aria-busy");
    return;
  }
  for (const m of sortedMsgs(c)) list.append(messageItem(c, m));
  for (const s of pendingFor(c)) list.append(pendingItem(s));
  $("older").hidden = c.noMore || !c.loaded;
  list.removeAttribute("aria-busy");
  if (keepAnchor) scroller.scrollTop = scroller.scrollHeight - oldHeight + scroller.scrollTop;
  else if (atBottom || keepAnchor === undefined) scroller.scrollTop = scroller.scrollHeight;
}

/** Appends one new message to the open log (announced by aria-live). */
function appendLive(c, m) {
  const scroller = $("scroller");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const last = $("messages").querySelector("li.msg:not(.pending):last-of-type");
  const lastSeq = last ? Number(last.dataset.seq) : 0;
  if (Number(m.seq) < lastSeq || $("messages").querySelector(".pending")) {
    renderConv(false);
  } else {
    $("messages").append(messageItem(c, m));
  }
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
}

async function openConv(key, focusComposer) {
  state.active = key;
  window.sessionStorage.setItem("parley.active", key);
  const c = state.convs.get(key);
  $("conv-title").textContent = convTitle(c);
  $("chat-view").classList.add("show-conv");
  $("composer-fieldset").disabled = false;
  if (!document.hidden) c.unread = 0;
  $("typing").textContent = typing.text(key);
  renderLists();
  renderConv();
  markRead(c);
  if (focusComposer) $("text").focus();
  if (!c.loaded) await loadHistory(c);
}

async function loadHistory(c) {
  if (c.loading || c.noMore) return;
  c.loading = true;
  const nums = [...c.msgs.values()].map((m) => Number(m.seq));
  const before = c.loaded && nums.length ? Math.min(...nums) : 0;
  const req = { limit: HISTORY_PAGE, before_seq: String(before) };
  if (c.kind === "group") req.group_id = c.id;
  else req.peer = c.id;
  try {
    const r = await session.request({ history: req });
    const got = r.history_ok.messages;
    for (const m of got) {
      addMessage(m);
      session.seen.add(m.msgid);
    }
    if (got.length < HISTORY_PAGE) c.noMore = true;
    const first = !c.loaded;
    c.loaded = true;
    if (state.active === c.key) renderConv(first ? undefined : true);
    markRead(c);
  } catch (e) {
    note("History: " + e.message);
  } finally {
    c.loading = false;
  }
}

function closeConvOnPhone() {
  $("chat-view").classList.remove("show-conv");
  const b = document.querySelector(`.conv-item[data-key="${state.active}"]`);
  if (b) b.focus();
}

/** Tells screen readers about one new message (the list itself is redrawn
 * too often to be a live region). Keeps the last few lines only. */
let quietUntil = 0; // the catch-up after a login is not read out line by line

function announce(text) {
  const a = $("announce");
  a.append(el("p", {}, [text]));
  while (a.children.length > 5) a.firstChild.remove();
}

// ---- actions ----

function note(text) {
  $("side-msg").textContent = text;
}

async function recall(msgid, button) {
  button.disabled = true;
  try {
    await session.request({ recall: { msgid } });
    markRecalled(msgid);
  } catch (e) {
    button.disabled = false;
    note("Recall: " + e.message);
  }
}

function markRecalled(msgid) {
  for (const c of state.convs.values()) {
    const m = c.msgs.get(msgid);
    if (m) {
      m.recalled = true;
      m.body = "";
      if (c.key === state.active) renderConv(false);
    }
  }
}

function sendCurrent() {
  const text = $("text").value;
  const c = state.convs.get(state.active);
  if (!c || !text.trim()) return;
  if (!session.loggedIn) return;
  session.send(c.kind, c.id, text);
  $("text").value = "";
  renderConv(false);
  $("scroller").scrollTop = $("scroller").scrollHeight;
}

async function refreshLists() {
  const r = await session.request({ friend_list: {} });
  applyLists(r.friend_list_ok.friends, r.friend_list_ok.groups);
}

function applyLists(friends, groups) {
  for (const u of state.users.values()) u.friend = false;
  for (const f of friends) state.users.set(f.id, { id: f.id, name: f.name, online: f.online, friend: true });
  state.groups.clear();
  for (const g of groups) {
    state.groups.set(g.id, g);
    for (const m of g.members) if (!state.users.has(m.id)) state.users.set(m.id, { id: m.id, name: m.name, online: false, friend: false });
  }
  renderLists();
}

// ---- session events ----

function showStatus() {
  const s = session.state;
  const st = $("status");
  st.dataset.state = s;
  const n = session.sends.length;
  let text = s === "online" ? "Online" : s === "connecting" ? "Connecting…" : "Offline: reconnecting";
  if (n && s !== "online") text += ` (${n} message${n > 1 ? "s" : ""} waiting)`;
  st.textContent = text;
}

session.on("state", () => {
  showStatus();
  if (state.active) renderConv(false);
});
session.on("pending", showStatus);

session.on("login", (login, how) => {
  state.me = { id: login.user.id, name: login.user.name };
  quietUntil = Date.now() + 2000;
  $("whoami").textContent = state.me.name;
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("logout").hidden = false;
  applyLists(login.friends, login.groups);
  if (HAS_UNREAD) {
    // The server keeps the read cursors: its counts replace ours.
    for (const c of state.convs.values()) c.unread = 0;
    for (const u of login.unread || []) {
      const c = u.group !== "0" ? conv("group", u.group) : conv("direct", u.peer);
      if (u.name && !c.name) c.name = u.name;
      c.convId = u.conv;
      c.unread = u.count;
      c.unreadFloor = Number(u.last_seq);
      c.readSent = Math.max(c.readSent, Number(u.last_read_seq));
    }
    renderLists();
  }
  if (how === "login") {
    $("password").value = "";
    const first = document.querySelector(".conv-item");
    (first || $("friend-name")).focus();
  }
  // After a resume, what was missed comes as pushes; history fills gaps
  // of the open conversation (e.g. after a reload, which reopens it).
  const saved = window.sessionStorage.getItem("parley.active");
  if (!state.active && saved && /^[ug]\d+$/.test(saved)) {
    conv(saved[0] === "g" ? "group" : "direct", saved.slice(1));
    openConv(saved, false);
  } else if (state.active) {
    const c = state.convs.get(state.active);
    if (c && !c.loaded) loadHistory(c);
  }
  renderConv(false);
});

session.on("loggedout", (why) => {
  state.me = null;
  for (const p of fileUrls.values()) p.then((u) => URL.revokeObjectURL(u), () => {});
  fileUrls.clear();
  state.convs.clear();
  state.users.clear();
  state.groups.clear();
  state.active = null;
  window.sessionStorage.removeItem("parley.active");
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  $("login-error").textContent = why || "";
  $("name").focus();
  updateTitle();
});

session.on("message", (m) => {
  const { c, isNew } = addMessage(m);
  if (!isNew) return;
  const mine = state.me && m.from === state.me.id;
  const visible = c.key === state.active && !document.hidden;
  const counted = HAS_UNREAD && Number(m.seq) <= c.unreadFloor; // in login_ok's count already
  // Social events count as unread too, as in login_ok's counts.
  const social = socialText(m, userName) !== null;
  if (!mine && !visible && !counted) c.unread++;
  typing.stopped(c.key, m.from);
  if (c.key === state.active) {
    appendLive(c, m);
    markRead(c);
  }
  if (!mine && Date.now() > quietUntil) {
    const what = social ? socialText(m, userName, convTitle(c)) : m.body || (m.attachment ? "a file: " + m.attachment.name : "");
    const where = c.key === state.active ? "" : c.kind === "group" ? ` in ${convTitle(c)}` : " (another conversation)";
    announce(`${userName(m.from, m.from_name)}${where}: ${what}`);
  }
  if (social) refreshListsSoon();
  renderLists();
});

session.on("sent", (s, ok) => {
  const c = conv(s.kind, s.target);
  const m = { msgid: ok.msgid, conv: ok.conv, seq: ok.seq, ts: ok.ts, from: state.me.id, to: s.kind === "group" ? "0" : s.target, group: s.kind === "group" ? s.target : "0", body: s.body, recalled: false, from_name: state.me.name, group_name: "", attachment: s.attachment };
  c.msgs.set(ok.msgid, { ...m, ...(c.msgs.get(ok.msgid) || {}) });
  session.seen.add(ok.msgid);
  if (c.key === state.active) renderConv(false);
  renderLists();
});

session.on("sendfailed", (s, e) => {
  note(`Not sent (${e.code}): "${s.body.slice(0, 40)}"`);
  if (state.active) renderConv(false);
});

session.on("recall", (ev) => markRecalled(ev.msgid));

session.on("push", (f) => {
  if (f.body === "read_event" && HAS_READ) onReadEvent(f.read_event);
  else if (f.body === "typing_event" && HAS_TYPING) {
    const ev = f.typing_event;
    if (state.me && ev.user === state.me.id) return;
    typing.seen(ev, ev.group !== "0" ? "g" + ev.group : "u" + ev.user);
  }
});

session.on("presence", (ev) => {
  const u = state.users.get(ev.user_id);
  if (u) {
    u.online = ev.online;
    renderLists();
  }
});

session.on("group_deleted", (ev) => {
  state.groups.delete(ev.group_id);
  note(`Group ${ev.group_id} was deleted.`);
  renderLists();
});

session.on("bye", (reason) => {
  note("Server: " + reason);
});

// ---- the forms ----

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const action = ev.submitter?.value || "login";
  const name = $("name").value.trim();
  const password = $("password").value;
  const err = $("login-error");
  err.textContent = "";
  for (const b of ev.target.querySelectorAll("button")) b.disabled = true;
  try {
    if (action === "register") await session.register(name, password);
    await session.login(name, password);
  } catch (e) {
    err.textContent = (action === "register" ? "Could not register: " : "Could not log in: ") + e.message;
    $("password").focus();
  } finally {
    for (const b of ev.target.querySelectorAll("button")) b.disabled = false;
  }
});

$("logout").addEventListener("click", () => session.logout().catch(() => {}));

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sendCurrent();
});
$("text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    sendCurrent();
  } else if (ev.key === "Escape" && window.matchMedia("(max-width: 700px)").matches) {
    closeConvOnPhone();
  }
});
$("back").addEventListener("click", closeConvOnPhone);
// Tells the other side of the open conversation that the user is typing.
// The server takes one a conversation every 2 s: typing again soon after a
// send is answered BUSY, and then told once more when it allows, if the
// user is still typing there (else the other side would see nothing).
function sendTyping(retried) {
  const c = state.convs.get(state.active);
  if (!HAS_TYPING || !c || !$("text").value || !session.ready) return;
  if (!retried && !typing.shouldSend(c.key)) return;
  const key = c.key;
  const to = c.kind === "group" ? { group_id: c.id } : { peer: c.id };
  session.request({ typing: to }).catch((e) => {
    if (retried || !e || e.code !== "BUSY" || !e.retryAfterMs) return; // offline: only a hint
    setTimeout(() => {
      if (state.active === key) sendTyping(true);
    }, Math.min(e.retryAfterMs, 5000) + 50);
  });
}
$("text").addEventListener("input", () => sendTyping(false));
$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  $("file").value = "";
  attachFile(f);
});
$("older").addEventListener("click", () => {
  const c = state.convs.get(state.active);
  if (c) loadHistory(c);
});
let stickBottom = true; // the open conversation is scrolled to its end
$("scroller").addEventListener("scroll", () => {
  const sc = $("scroller");
  stickBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < 40;
  const c = state.convs.get(state.active);
  if (c && c.loaded && !c.noMore && $("scroller").scrollTop < 20) loadHistory(c);
});

$("add-friend").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const v = $("friend-name").value.trim();
  if (!v) return;
  try {
    let id = v;
    if (!/^\d+$/.test(v)) id = (await session.request({ whois: { name: v } })).whois_ok.user.id;
    await session.request({ friend_add: { user_id: id } });
    $("friend-name").value = "";
    note("Added " + v + " as a friend.");
    await refreshLists();
  } catch (e) {
    note("Add friend: " + e.message);
  }
});

$("new-group").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("group-name").value.trim();
  if (!name) return;
  try {
    const r = await session.request({ group_create: { name, desc: "" } });
    $("group-name").value = "";
    note(`Created group ${name} (#${r.group_create_ok.group_id}).`);
    await refreshLists();
  } catch (e) {
    note("Create group: " + e.message);
  }
});

$("join-group").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const id = $("group-id").value.trim();
  if (!/^\d+$/.test(id)) {
    note("Join group: give the group's number.");
    return;
  }
  try {
    await session.request({ group_join: { group_id: id } });
    $("group-id").value = "";
    note("Joined group #" + id + ".");
    await refreshLists();
  } catch (e) {
    note("Join group: " + e.message);
  }
});

document.addEventListener("visibilitychange", () => {
  if (document.hidden || !state.active) return;
  const c = state.convs.get(state.active);
  markRead(c);
  if (c && c.unread) {
    c.unread = 0;
    renderLists();
  }
});

if (!HAS_FILES) {
  $("file").remove();
  document.querySelector(".attach-btn").remove();
}

// Until the session says otherwise, show the login form (or, with a saved
// token, the chat while it resumes).
if (session.token && session.me) {
  state.me = session.me;
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
} else {
  $("name").focus();
}
updateTitle();
showStatus();
session.connect();
// For the browser test and the curious: the state, and which parts of the
// protocol this build knows.
window.parley = { session, state, features: { read: HAS_READ, unread: HAS_UNREAD, typing: HAS_TYPING, files: HAS_FILES } };
