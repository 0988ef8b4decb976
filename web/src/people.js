// Read state, typing and social events (issue 16), for servers whose
// protocol has them: each part is on only when the schema this page was
// built from (proto/parley.proto) defines its fields, so the page works
// against a server without them and shows them as soon as it has them.
import { has } from "./proto.js";

export const HAS_READ = has("parley.ClientFrame", "read") && has("parley.ServerFrame", "read_event");
export const HAS_UNREAD = has("parley.LoginOk", "unread");
export const HAS_TYPING = has("parley.ClientFrame", "typing") && has("parley.ServerFrame", "typing_event");
export const HAS_KIND = has("parley.Message", "kind");

const TYPING_SHOW_MS = 5000;
const TYPING_EVERY_MS = 3000;

/** A social event (a Message whose kind is not TEXT) in words, or null
 * for a text. name(id, hint) names a user ("you" for oneself); other: the
 * other user of a direct conversation. */
export function socialText(m, name, other = "them") {
  if (!HAS_KIND || !m.kind || m.kind === "TEXT") return null;
  const who = name(m.from, m.from_name);
  const you = who === "you";
  switch (m.kind) {
    case "FRIEND_ADDED":
      return you ? `You added ${other} as a friend.` : `${who} added you as a friend.`;
    case "FRIEND_REMOVED":
      return you ? `You removed ${other} from your friends.` : `${who} removed you from their friends.`;
    case "MEMBER_JOINED":
      return you ? "You joined the group." : `${who} joined the group.`;
    case "MEMBER_LEFT":
      return you ? "You left the group." : `${who} left the group.`;
    case "MEMBER_REMOVED":
      return `${who} was removed from the group.`;
    case "GROUP_RENAMED":
      return `${who} renamed the group.`;
    default:
      return `${who}: ${String(m.kind).toLowerCase().replace(/_/g, " ")}`;
  }
}

/** Who is typing where: key -> Map(user id -> {name, until}). */
export class Typing {
  constructor(onChange) {
    this.where = new Map();
    this.onChange = onChange;
    this.lastSent = 0;
    this.lastKey = "";
  }

  /** A typing_event: user typing to me (group "0") or in group. */
  seen(ev, key) {
    if (!this.where.has(key)) this.where.set(key, new Map());
    this.where.get(key).set(ev.user, { name: ev.user_name || "user " + ev.user, until: Date.now() + TYPING_SHOW_MS });
    this.onChange(key);
    setTimeout(() => this.expire(key), TYPING_SHOW_MS + 50);
  }

  /** A message from user ends their typing. */
  stopped(key, user) {
    const m = this.where.get(key);
    if (m && m.delete(user)) this.onChange(key);
  }

  expire(key) {
    const m = this.where.get(key);
    if (!m) return;
    const now = Date.now();
    let changed = false;
    for (const [u, t] of m) {
      if (t.until <= now) {
        m.delete(u);
        changed = true;
      }
    }
    if (changed) this.onChange(key);
  }

  /** "bob is typing…", "bob and carol are typing…", or "". */
  text(key) {
    const m = this.where.get(key);
    if (!m || !m.size) return "";
    const names = [...m.values()].map((t) => t.name);
    if (names.length === 1) return `${names[0]} is typing…`;
    if (names.length <= 3) return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]} are typing…`;
    return "Several people are typing…";
  }

  /** Whether the user's keystrokes in conversation key should be told now
   * (at most once every few seconds). */
  shouldSend(key) {
    const now = Date.now();
    if (key === this.lastKey && now - this.lastSent < TYPING_EVERY_MS) return false;
    this.lastKey = key;
    this.lastSent = now;
    return true;
  }
}
