// The wire format: ClientFrame / ServerFrame of proto/parley.proto, whose
// schema build.mjs parsed at build time. 64-bit fields (ids, seqs, times)
// travel as decimal strings in this app: a client_msg_id does not fit a
// JavaScript number.
import protobuf from "protobufjs/light.js";
import Long from "long";
import schema from "parley-schema";

protobuf.util.Long = Long;
protobuf.configure();

const root = protobuf.Root.fromJSON(schema);
const ClientFrame = root.lookupType("parley.ClientFrame");
const ServerFrame = root.lookupType("parley.ServerFrame");

/** Protobuf bytes of one ClientFrame given as a plain object (64-bit
 * fields as decimal strings or numbers). */
export function encodeClient(obj) {
  return ClientFrame.encode(ClientFrame.fromObject(obj)).finish();
}

/** One ServerFrame as a plain object: `body` names the reply or push that is
 * set, longs are strings, enums their names, unset scalars their defaults. */
export function decodeServer(bytes) {
  const m = ServerFrame.decode(new Uint8Array(bytes));
  return ServerFrame.toObject(m, { longs: String, enums: String, defaults: true, oneofs: true });
}

/** Whether this build's schema has a field, e.g. has("parley.Message", "unread"):
 * features of newer servers are shown only when the protocol knows them. */
export function has(type, field) {
  try {
    return !!root.lookupType(type).fields[field];
  } catch {
    return false;
  }
}
