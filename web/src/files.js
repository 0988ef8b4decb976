// Files (docs/protocol.md "Files") over the session's link: an upload in
// chunks, begun again after a reconnect from the offset the server has
// (the same SHA-256 names the same upload); a download by msgid, in
// chunks, into a Blob.
import { sha256 } from "./sha256.js";

const TRIES = 30;

export async function hashBytes(bytes) {
  if (globalThis.crypto && crypto.subtle) return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return sha256(bytes);
}

export function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fmtSize(n) {
  n = Number(n);
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

/** Uploads file; resolves with its attachment {sha256 (base64), name, size,
 * type} once the server has all of it. onProgress(fraction). */
export async function upload(session, file, onProgress) {
  const data = new Uint8Array(await file.arrayBuffer());
  const hash = await hashBytes(data);
  const name = file.name || "file";
  const type = file.type || "";
  for (let attempt = 1; ; attempt++) {
    try {
      await session.whenReady();
      const begin = { name, size: String(data.length), type, sha256: hash };
      const r = (await session.request({ file_begin: begin })).file_begin_ok;
      let off = Number(r.offset);
      let complete = r.complete;
      const max = Math.max(1024, Math.min(r.chunk_max || 65536, session.maxFrame - 1024));
      onProgress(data.length ? off / data.length : 1);
      while (!complete) {
        const end = Math.min(off + max, data.length);
        const chunk = { upload_id: r.upload_id, offset: String(off), data: data.subarray(off, end) };
        const c = (await session.request({ file_chunk: chunk })).file_chunk_ok;
        off = Number(c.offset);
        complete = c.complete;
        onProgress(data.length ? off / data.length : 1);
      }
      return { sha256: toBase64(hash), name, size: String(data.length), type };
    } catch (e) {
      // A dropped link: wait for the session to come back and begin again.
      if (e.code !== "UNAVAILABLE" || attempt >= TRIES) throw e;
    }
  }
}

/** The attachment of message msgid as a Blob. */
export async function download(session, msgid, type) {
  const parts = [];
  let off = 0;
  for (let attempt = 1; ; ) {
    try {
      await session.whenReady();
      const d = (await session.request({ file_get: { msgid, offset: String(off), limit: 0 } })).file_data;
      if (d.data.length) parts.push(d.data);
      off += d.data.length;
      if (d.attachment && d.attachment.type) type = d.attachment.type;
      if (d.eof || !d.data.length) return new Blob(parts, { type: type || "application/octet-stream" });
    } catch (e) {
      if (e.code !== "UNAVAILABLE" || ++attempt > TRIES) throw e;
    }
  }
}
