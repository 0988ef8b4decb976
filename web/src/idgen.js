// client_msg_id, as the terminal client makes it (docs/protocol.md,
// "Exactly-once sends"): milliseconds since 1970 above 22 random bits drawn
// once per page, always above the last id. Never 0.
const salt = (() => {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return BigInt(a[0] & ((1 << 22) - 1));
})();
let last = 0n;

export function newClientMsgId() {
  let id = (BigInt(Date.now()) << 22n) | salt;
  if (id <= last) id = last + 1n;
  last = id;
  return id.toString();
}
