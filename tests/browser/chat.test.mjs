// The web client in a real browser: two Chromium users (alice, bob) and a
// terminal user (carol, `parley --json`) chat directly and in a group
// against a real parleyd serving the page and WebSocket. Recall, history
// scroll-back, a reload that keeps the conversation, and a server restart
// while alice is connected, with sends typed during the outage and one
// whose reply is lost: nothing lost, nothing shown or stored twice. Where
// the page's protocol has them (files; people), images both ways, read
// marks, typing, a second device and unread counts at login too.
// Screenshots of each step go to PARLEY_BROWSER_ARTIFACTS (the build
// tree's browser-artifacts/).
//
// Run by ctest (CMakeLists.txt, browser/chat); by hand:
//   PARLEYD=build/parleyd PARLEY=build/parley PARLEY_WEB_ROOT=build/web node tests/browser/chat.test.mjs
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ARTIFACTS, CHROMIUM, Server, Terminal, missing, playwright, sleep, stopAll, until } from "./lib.mjs";

const why = missing();
if (why) {
  // ctest reads 77 as "skipped" (SKIP_RETURN_CODE).
  console.log("SKIP: the browser test needs Chromium and node: " + why);
  process.exit(77);
}

const PASSWORD = "secret123";
let browser = null;
let server = null;
const terminals = [];
let tmp = null; // the image files

after(async () => {
  for (const t of terminals) t.close();
  await stopAll(browser);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  if (server) await server.cleanup();
});

async function shot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, name + ".png"), fullPage: true });
}

/** A browser user on a fresh page: registers (unless existing) and logs
 * in through the form. */
async function webUser(name, viewport, existing = false) {
  const ctx = await browser.newContext({ viewport: viewport || { width: 1100, height: 720 } });
  ctx.setDefaultTimeout(60000); // generous: CI runs this beside sanitized suites on 2 cores
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.log(`[${name} page error] ${e.message}`));
  // (a refused WebSocket while the server restarts is expected)
  page.on("console", (m) => m.type() === "error" && !/WebSocket connection/.test(m.text()) && console.log(`[${name} console] ${m.text()}`));
  await page.goto(server.url);
  if (!existing) await shot(page, `0-${name}-sign-in`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: existing ? "Log in" : "Register" }).click();
  await page.locator("#chat-view").waitFor();
  await until(`${name} logged in`, async () => (await page.title()).endsWith("Parley: " + name));
  return page;
}

/** The li elements of the open conversation that carry body. */
function bubbles(page, body) {
  return page.locator("#messages li.msg .body", { hasText: new RegExp("^" + body.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$") });
}

async function openConv(page, title) {
  await page.locator(".conv-item", { hasText: title }).first().click();
  await page.locator("#conv-title", { hasText: title }).waitFor();
}

async function say(page, text) {
  await page.getByRole("textbox", { name: "Message" }).fill(text);
  await page.getByRole("textbox", { name: "Message" }).press("Enter");
}

async function seesOnce(page, body, timeout = 30000) {
  await bubbles(page, body).first().waitFor({ timeout });
  assert.equal(await bubbles(page, body).count(), 1, `"${body}" shown once`);
}

/** An image with this name shown (loaded) in the open conversation. */
async function imageShown(page, name) {
  const img = page.locator(`#messages img[alt="Image: ${name}"]`);
  await img.first().waitFor();
  await until(`${name} to load`, () => img.first().evaluate((e) => e.complete && e.naturalWidth > 0));
  assert.equal(await img.count(), 1, `${name} shown once`);
}

test("two browser users and a terminal user chat, reload, and live through a restart", { timeout: 480000 /* under ctest's 600 s, so the cleanup runs */ }, async () => {
  server = await new Server().start();
  const { chromium } = playwright();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });

  // ---- accounts: two in the browser, one in the terminal ----
  const alice = await webUser("alice", { width: 1100, height: 900 });
  const bob = await webUser("bob", { width: 390, height: 780 }); // a phone
  const carol = new Terminal(server.port);
  terminals.push(carol);
  await carol.ok(`register:carol:${PASSWORD}`);
  await carol.ok(`login:carol:${PASSWORD}`);
  assert.equal(await alice.title(), "Parley: alice");

  // ---- friends, by name, with presence ----
  for (const who of ["bob", "carol"]) {
    await alice.getByLabel("Add a friend").fill(who);
    await alice.getByLabel("Add a friend").press("Enter");
    await alice.locator(".conv-item", { hasText: who }).waitFor();
  }
  await until("bob online in alice's list", () => alice.locator(".conv-item", { hasText: "bob" }).locator(".presence.on").count());

  // ---- direct chat, browser to browser ----
  await openConv(alice, "bob");
  await say(alice, "hello bob, from a browser");
  await seesOnce(alice, "hello bob, from a browser");
  await alice.locator("#messages li.mine .status", { hasText: "sent" }).first().waitFor();
  // bob has not opened it: an unread count in his list and his tab title
  // (1, or 2 where the server also tells him alice added him as a friend).
  await bob.locator(".conv-item", { hasText: "alice" }).locator(".badge", { hasText: /^[12]$/ }).waitFor();
  await until("bob's title to count unread", async () => /^\([12]\) Parley: bob$/.test(await bob.title()));
  await openConv(bob, "alice");
  await seesOnce(bob, "hello bob, from a browser");
  assert.equal(await bob.title(), "Parley: bob", "opened, nothing unread");
  await say(bob, "hi alice! 👋 héllo");
  await seesOnce(alice, "hi alice! 👋 héllo");
  // Screen readers hear it once, from the live region.
  await alice.locator("#announce p", { hasText: "bob: hi alice! 👋 héllo" }).waitFor({ state: "attached" });
  assert.equal(await alice.locator("#messages li").first().evaluate((e) => e.closest("[aria-live]")), null);

  // ---- direct chat with the terminal user ----
  await carol.ok("whois:alice"); // the terminal learns names it is told
  await carol.ok("chat:alice:hello from the terminal");
  await until("carol's message in alice's list", () => alice.locator(".conv-item", { hasText: "carol" }).locator(".badge").count());
  await openConv(alice, "carol");
  await seesOnce(alice, "hello from the terminal");
  await alice.locator("#messages li .from", { hasText: "carol" }).first().waitFor();
  await say(alice, "hello carol, from a browser");
  const m = await carol.waitMessage("hello carol, from a browser");
  assert.equal(m.from_name, "alice");

  // ---- a group: alice creates it, bob joins in the browser, carol in the terminal ----
  await alice.getByLabel("Create a group").fill("team");
  await alice.getByLabel("Create a group").press("Enter");
  await alice.locator("#groups .conv-item", { hasText: "team" }).waitFor();
  const gid = await alice.evaluate(() => [...window.parley.state.groups.values()].find((g) => g.name === "team").id);
  await bob.getByRole("button", { name: "Back to the conversations" }).click();
  await bob.getByLabel("Join a group by number").fill(gid);
  await bob.getByLabel("Join a group by number").press("Enter");
  await bob.locator("#groups .conv-item", { hasText: "team" }).waitFor();
  await carol.ok(`addgroup:${gid}`);
  await openConv(alice, "team");
  await say(alice, "welcome to the team");
  await openConv(bob, "team");
  await seesOnce(bob, "welcome to the team");
  const g = await carol.waitMessage("welcome to the team");
  assert.equal(g.group_name, "team");
  await carol.ok(`groupchat:${gid}:carol here, from the terminal`);
  await seesOnce(alice, "carol here, from the terminal");
  await seesOnce(bob, "carol here, from the terminal");
  await say(bob, "bob here, on a phone");
  await seesOnce(alice, "bob here, on a phone");
  await carol.waitMessage("bob here, on a phone");
  await alice.locator("#messages li", { hasText: "carol here" }).locator(".from", { hasText: "carol" }).waitFor();

  // What the protocol this build has (people: read marks and typing;
  // files: images) decides which of the steps below run.
  const features = await alice.evaluate(() => window.parley.features);
  console.log("# web client features: " + JSON.stringify(features));

  // ---- read marks and typing ----
  if (features.read && features.typing) {
    await openConv(alice, "bob");
    await bob.getByRole("button", { name: "Back to the conversations" }).click();
    await openConv(bob, "alice");
    await bob.getByRole("textbox", { name: "Message" }).pressSequentially("typ", { delay: 50 });
    await alice.locator("#typing", { hasText: "bob is typing" }).waitFor();
    await bob.getByRole("textbox", { name: "Message" }).fill("");
    await say(alice, "seen this?");
    await seesOnce(bob, "seen this?"); // open and visible: bob's page marks it read
    const mine = alice.locator("#messages li.mine", { hasText: "seen this?" }).locator(".status");
    await until("alice to see bob's read mark", async () => (await mine.textContent()) === "read");
    await until("bob's typing to expire", async () => (await alice.locator("#typing").textContent()) === "", 15000);
    await shot(alice, "0-alice-read-mark");

    // bob on a second device: what he sends from his phone shows there as his.
    const bob2 = await webUser("bob", null, true);
    await openConv(bob2, "alice");
    await say(bob, "sent from my phone");
    await seesOnce(alice, "sent from my phone");
    await seesOnce(bob2, "sent from my phone");
    await bob2.locator("#messages li.mine", { hasText: "sent from my phone" }).waitFor();
    await bob2.context().close();
    await bob.getByRole("button", { name: "Back to the conversations" }).click();
    await openConv(bob, "team");
  }

  // ---- images: one from the browser, one from the terminal ----
  if (features.files) {
    await openConv(alice, "team");
    tmp = mkdtempSync(path.join(os.tmpdir(), "parley-browser-files-"));
    const png = path.join(tmp, "chat-so-far.png");
    writeFileSync(png, await alice.screenshot({ clip: { x: 300, y: 110, width: 420, height: 240 } }));
    await alice.locator("#file").setInputFiles(png);
    await alice.locator("#upload-status", { hasText: "Uploaded chat-so-far.png" }).waitFor();
    await imageShown(alice, "chat-so-far.png");
    await imageShown(bob, "chat-so-far.png");
    const fm = await until("the image at the terminal", () => carol.events.find((e) => e.type === "message" && e.file && e.file.name === "chat-so-far.png"));
    assert.equal(fm.file.type, "image/png");
    await carol.ok(`getfile:${fm.msgid}:${path.join(tmp, "got.png")}`);
    assert.ok(readFileSync(path.join(tmp, "got.png")).equals(readFileSync(png)), "the terminal gets the same bytes");
    const png2 = path.join(tmp, "from-terminal.png");
    writeFileSync(png2, await bob.screenshot({ clip: { x: 0, y: 0, width: 390, height: 200 } }));
    await carol.ok(`groupsendfile:${gid}:${png2}`);
    await imageShown(alice, "from-terminal.png");
    await imageShown(bob, "from-terminal.png");
  }

  await shot(alice, "1-alice-group");
  await shot(bob, "2-bob-phone-group");

  // ---- recall: alice takes a message back; bob sees it go ----
  await openConv(alice, "bob");
  await say(alice, "oops, wrong chat");
  await seesOnce(alice, "oops, wrong chat");
  await bob.getByRole("button", { name: "Back to the conversations" }).click();
  await openConv(bob, "alice");
  await seesOnce(bob, "oops, wrong chat");
  await alice.locator("#messages li", { hasText: "oops, wrong chat" }).getByRole("button", { name: "Recall this message" }).click();
  await until("the recall to reach bob", async () => (await bubbles(bob, "oops, wrong chat").count()) === 0);
  await bob.locator("#messages li .recalled").first().waitFor();
  await alice.locator("#messages li .recalled").first().waitFor();

  // ---- enough group messages for history to come in pages ----
  for (let i = 1; i <= 35; i++) await carol.ok(`groupchat:${gid}:scroll ${i}`);
  await bob.getByRole("button", { name: "Back to the conversations" }).click();
  await openConv(bob, "team");
  await seesOnce(bob, "scroll 35");

  // ---- reload: the session resumes and the conversation is still there ----
  await bob.reload();
  await bob.locator("#conv-title", { hasText: "team" }).waitFor();
  await seesOnce(bob, "scroll 35");
  // The newest page (30) first; the rest when scrolled back to.
  await seesOnce(bob, "scroll 10");
  await bob.locator("#scroller").evaluate((e) => (e.scrollTop = 0));
  const older = bob.getByRole("button", { name: "Load older messages" });
  if (await older.isVisible()) await older.click().catch(() => {}); // it may have gone already
  for (const body of ["welcome to the team", "carol here, from the terminal", "bob here, on a phone", "scroll 1"]) await seesOnce(bob, body);
  await shot(bob, "3-bob-scrolled-back");
  await bob.getByRole("button", { name: "Back to the conversations" }).click();
  await openConv(bob, "alice");
  await seesOnce(bob, "hello bob, from a browser");
  await seesOnce(bob, "hi alice! 👋 héllo");
  await shot(bob, "3-bob-after-reload");

  // ---- restart parleyd while alice is connected; she types during the outage ----
  await openConv(alice, "bob");
  await server.stop();
  await alice.locator("#status", { hasText: "Offline" }).waitFor();
  const offline = ["typed while the server was down", "and a second one"];
  for (const t of offline) await say(alice, t);
  await alice.locator("#messages li.pending", { hasText: offline[1] }).waitFor();
  await alice.locator("#status", { hasText: "2 messages waiting" }).waitFor();
  await shot(alice, "4-alice-offline-pending");
  await sleep(1000);
  await server.start();
  await alice.locator("#status", { hasText: "Online" }).waitFor({ timeout: 60000 });
  for (const t of offline) {
    await seesOnce(alice, t);
    await seesOnce(bob, t, 60000);
  }
  await until("alice's sends all confirmed", async () => (await alice.locator("#messages li.pending").count()) === 0);
  // A send whose reply is lost (the link closes right after it is
  // written) goes again after the reconnect with its client_msg_id: the
  // server stores it once and bob sees it once.
  await alice.evaluate(() => {
    const { session, state } = window.parley;
    const c = state.convs.get(state.active);
    session.send(c.kind, c.id, "its reply was lost");
    session.ws.close();
  });
  await seesOnce(bob, "its reply was lost", 60000);
  await seesOnce(alice, "its reply was lost", 60000);
  offline.push("its reply was lost");
  // Carol's terminal reconnected too; what she sends reaches alice once.
  await carol.ok("chat:alice:after the restart");
  await openConv(alice, "carol");
  await seesOnce(alice, "after the restart");
  await openConv(alice, "bob");
  await sleep(1500); // any repeat would have arrived by now
  for (const t of [...offline, "hello bob, from a browser", "hi alice! 👋 héllo"]) {
    assert.equal(await bubbles(alice, t).count(), 1, `alice sees "${t}" once`);
    assert.equal(await bubbles(bob, t).count(), 1, `bob sees "${t}" once`);
  }
  // The server stored each once: bob's history after another reload.
  await bob.reload();
  await bob.locator("#conv-title", { hasText: "alice" }).waitFor();
  for (const t of offline) await seesOnce(bob, t);
  const hist = await carol.ok(`history:alice`);
  assert.equal(hist.messages.filter((x) => x.body === "after the restart").length, 1);
  // ---- unread counts at login, and reading them (servers with read state) ----
  if (features.unread && features.read) {
    await carol.ok(`register:dave:${PASSWORD}`);
    await carol.ok("whois:dave");
    await carol.ok("chat:dave:are you there?");
    await carol.ok("chat:dave:hello?");
    const dave = await webUser("dave", null, true);
    await dave.locator(".conv-item", { hasText: "carol" }).locator(".badge", { hasText: "2" }).waitFor();
    assert.equal(await dave.title(), "(2) Parley: dave");
    await openConv(dave, "carol");
    await seesOnce(dave, "hello?");
    assert.equal(await dave.title(), "Parley: dave");
    await sleep(500); // the read goes to the server
    const dave2 = await webUser("dave", null, true); // another device: nothing unread now
    await sleep(1000);
    assert.equal(await dave2.locator(".badge").count(), 0);
    assert.equal(await dave2.title(), "Parley: dave");
    await dave.context().close();
    await dave2.context().close();
  }

  await shot(alice, "5-alice-after-restart");
  await shot(bob, "6-bob-after-restart");
});
