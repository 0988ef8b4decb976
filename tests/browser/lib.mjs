// Helpers of the browser test: a real parleyd (embedded, temporary data
// directory, free ports) serving the web client over WebSocket, `parley
// --json` terminal clients driven through pipes, and Debian's Chromium
// driven by playwright-core. Everything started here is stopped by
// stopAll(), which the test calls whatever happens, and at process exit.
import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { existsSync, mkdtempSync, readFileSync, rmSync, openSync, closeSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const PARLEYD = process.env.PARLEYD || path.join(ROOT, "build/parleyd");
export const PARLEY = process.env.PARLEY || path.join(ROOT, "build/parley");
export const WEB_ROOT = process.env.PARLEY_WEB_ROOT || path.join(ROOT, "build/web");
export const ARTIFACTS = process.env.PARLEY_BROWSER_ARTIFACTS || path.join(ROOT, "build/browser-artifacts");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const live = new Set(); // child processes to kill at the end

/** The reason the browser test cannot run here, or "" if it can. */
export function missing() {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (scripts/install-deps.sh installs Debian's chromium)`;
  const r = spawnSync(CHROMIUM, ["--version"], { encoding: "utf8", timeout: 30000 });
  if (r.status !== 0) return `${CHROMIUM} --version failed: ${r.stderr || r.error}`;
  return "";
}

export function playwright() {
  const require = createRequire(path.join(ROOT, "web", "package.json"));
  return require("playwright-core");
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}` + (last ? `: ${last.message}` : ""));
}

/** One parleyd (role all) with a client port and a WebSocket port. */
export class Server {
  constructor() {
    this.data = mkdtempSync(path.join(os.tmpdir(), "parley-browser-"));
    this.log = path.join(this.data, "parleyd.log");
    this.proc = null;
  }

  async start() {
    if (!this.port) {
      this.port = await freePort();
      this.wsPort = await freePort();
    }
    const args = ["--port", String(this.port), "--ws-port", String(this.wsPort), "--web-root", WEB_ROOT,
      "--data", this.data, "--pwhash-cost", "min"];
    const fd = openSync(this.log, "a");
    this.proc = spawn(PARLEYD, args, { stdio: ["ignore", fd, fd] });
    closeSync(fd);
    live.add(this.proc);
    this.proc.on("exit", () => live.delete(this.proc));
    this.proc.on("error", () => {}); // exitCode stays null: the wait below times out
    const from = this.logs().length;
    await until("parleyd to be ready", () => {
      if (this.proc.exitCode !== null) throw new Error(`parleyd exited with ${this.proc.exitCode}:\n${this.logs().slice(-3000)}`);
      return this.logs().slice(from).includes("Parley is ready");
    });
    return this;
  }

  get url() {
    return `http://127.0.0.1:${this.wsPort}/`;
  }

  logs() {
    try {
      return readFileSync(this.log, "utf8");
    } catch {
      return "";
    }
  }

  /** SIGTERM (the server says bye to everyone); its exit code. */
  async stop() {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode) return p ? p.exitCode : null;
    const done = new Promise((r) => p.once("exit", (code) => r(code)));
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 20000);
    const code = await done;
    clearTimeout(t);
    return code;
  }

  /** Stops the server, removes its data; throws on a sanitizer report. */
  async cleanup() {
    const code = await this.stop();
    const logs = this.logs();
    if (!process.env.PARLEY_KEEP) rmSync(this.data, { recursive: true, force: true });
    for (const m of ["AddressSanitizer", "LeakSanitizer", "runtime error:"]) {
      if (logs.includes(m)) throw new Error("parleyd reported a sanitizer error:\n" + logs.slice(-6000));
    }
    if (code !== 0 && code !== null) throw new Error(`parleyd exited with ${code} on SIGTERM:\n${logs.slice(-3000)}`);
  }
}

/** A `parley --json` terminal client in script mode: cmd() writes one
 * command and resolves with its reply; pushes are kept in this.events. */
export class Terminal {
  constructor(port) {
    this.proc = spawn(PARLEY, ["--json", "--port", String(port), "--wait-ms", "300", "--reconnect-for", "120"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    live.add(this.proc);
    this.proc.on("exit", () => live.delete(this.proc));
    this.proc.on("error", (e) => (this.stderr += `cannot run ${PARLEY}: ${e.message}\n`));
    this.proc.stdin.on("error", () => {}); // it exited: cmd() times out and says so
    this.events = [];
    this.replies = [];
    this.waiters = [];
    this.stderr = "";
    this.proc.stderr.on("data", (d) => (this.stderr += d));
    readline.createInterface({ input: this.proc.stdout }).on("line", (line) => {
      let obj;
      try {
        obj = JSON.parse(line);
      } catch {
        obj = { type: "unparsable", raw: line };
      }
      if (obj.type === "reply") this.replies.push(obj);
      else this.events.push(obj);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async cmd(line, timeoutMs = 30000) {
    const before = this.replies.length;
    this.proc.stdin.write(line + "\n");
    await until(`a reply to ${line}`, () => {
      if (this.proc.exitCode !== null || this.stderr.startsWith("cannot run"))
        throw new Error(`parley exited (${this.proc.exitCode}): ${this.stderr.slice(-2000)}`);
      return this.replies.length > before;
    }, timeoutMs);
    return this.replies[before];
  }

  async ok(line) {
    const r = await this.cmd(line);
    if (!r.ok) throw new Error(`${line} failed: ${JSON.stringify(r)}`);
    return r;
  }

  messages(body) {
    return this.events.filter((e) => e.type === "message" && (body === undefined || e.body === body));
  }

  waitMessage(body, timeoutMs = 30000) {
    return until(`the terminal to receive "${body}"`, () => this.messages(body)[0], timeoutMs);
  }

  close() {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
  }
}

/** Kills whatever is still running: parleyd, parley, Chromium (closed by
 * its own handle first). */
export async function stopAll(browser) {
  if (browser) {
    await Promise.race([browser.close().catch(() => {}), sleep(10000)]);
  }
  for (const p of live) {
    try {
      p.kill("SIGKILL");
    } catch {}
  }
}

process.on("exit", () => {
  for (const p of live) {
    try {
      p.kill("SIGKILL");
    } catch {}
  }
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    for (const p of live) {
      try {
        p.kill("SIGKILL");
      } catch {}
    }
    process.exit(1);
  });
}
