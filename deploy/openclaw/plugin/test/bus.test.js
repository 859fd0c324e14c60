// The follower and the client against a real clawbus adapter and a real
// nats-server (no stand-ins): NATS_SERVER_BIN and CLAWBUS_BIN name them
// (scripts/test.sh sets both; by default .tools' nats-server through
// scripts/ensure-nats.sh and target/debug/clawbus). Skipped, saying why,
// when they are not there.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { followAccount } from "../src/account.js";
import { BusClient } from "../src/client.js";
import { Follower } from "../src/follower.js";
import { HandedOver } from "../src/state.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

function binaries() {
  const clawbus = process.env.CLAWBUS_BIN ?? path.join(ROOT, "target/debug/clawbus");
  let nats = process.env.NATS_SERVER_BIN;
  if (!nats) {
    try {
      nats = execFileSync(path.join(ROOT, "scripts/ensure-nats.sh"), { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    } catch {
      nats = undefined;
    }
  }
  if (!existsSync(clawbus)) return { skip: `no clawbus binary at ${clawbus} (cargo build, or set CLAWBUS_BIN)` };
  if (!nats || !existsSync(nats)) return { skip: "no nats-server (set NATS_SERVER_BIN, or run scripts/ensure-nats.sh)" };
  return { clawbus, nats };
}

const bins = binaries();
const skip = bins.skip ?? false;
let dir;
const processes = [];
let url;

async function freePort() {
  return await new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  if (skip) return;
  dir = await mkdtemp(path.join(tmpdir(), "clawbus-plugin-"));
  const natsPort = await freePort();
  const httpPort = await freePort();
  processes.push(spawn(bins.nats, ["-a", "127.0.0.1", "-p", String(natsPort), "-js", "-sd", path.join(dir, "js")], { stdio: "ignore" }));
  await until("nats-server", () => new Promise((resolve) => {
    const socket = net.connect(natsPort, "127.0.0.1", () => { socket.end(); resolve(true); }).on("error", () => resolve(false));
  }));
  const config = path.join(dir, "clawbus.toml");
  await writeFile(config, `host = "hostP"\n[http]\nlisten = "127.0.0.1:${httpPort}"\n[nats]\nurl = "nats://127.0.0.1:${natsPort}"\n` +
    `[limits]\npair_per_minute = 0\n` +
    ["alice", "carol", "mallory"].map((n) => `[[agents]]\nname = "${n}"\nwake = "none"\n`).join("") +
    `[[agents]]\nname = "bob"\nwake = "channel"\n`);
  processes.push(spawn(bins.clawbus, ["serve", "--config", config], { stdio: "ignore", env: { ...process.env, RUST_LOG: "warn" } }));
  url = `http://127.0.0.1:${httpPort}`;
  await until("clawbus adapter", async () => (await fetch(`${url}/readyz`)).ok);
});

after(async () => {
  for (const child of processes.reverse()) {
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

const quiet = { info() {}, warn() {}, error() {} };

function follower(state, handOver, options = {}) {
  const f = new Follower({ agent: "bob", client: new BusClient({ url }), state, handOver, log: quiet, ...options });
  f.done = f.run();
  return f;
}

async function unread(agent) {
  return (await new BusClient({ url }).unread(agent)).map((m) => m.id);
}

test("backlog and live mail are handed over once each, in order, then acknowledged", { skip }, async () => {
  const bus = new BusClient({ url });
  const state = await HandedOver.open(path.join(dir, "state1"), "bob");
  const before = [(await bus.send({ from: "alice", to: "bob", content: "one" })).id, (await bus.send({ from: "alice", to: "bob", content: "two" })).id];
  const handed = [];
  const f = follower(state, async (m) => { handed.push(m.id); });
  await until("following", async () => f.connected);
  const live = (await bus.send({ from: "alice", to: "bob", content: "three" })).id;
  await until("all three handed over and acknowledged", async () => handed.length === 3 && (await unread("bob")).length === 0);
  assert.deepEqual(handed, [...before, live]);
  assert.ok([...before, live].every((id) => state.has(id)));
  await f.stop();
  await f.done;
});

test("a stop before the hand-over finished: handed over again after the restart, exactly once", { skip }, async () => {
  const bus = new BusClient({ url });
  const stateDir = path.join(dir, "state2");
  let state = await HandedOver.open(stateDir, "bob");
  let started;
  const hung = new Promise((resolve) => { started = resolve; });
  let f = follower(state, async (m) => { started(m.id); await new Promise(() => {}); });
  await until("following", async () => f.connected);
  const id = (await bus.send({ from: "carol", to: "bob", content: "slow" })).id;
  assert.equal(await hung, id);
  await f.stop(100);
  await f.done;
  assert.deepEqual(await unread("bob"), [id], "not acknowledged: its turn never finished");

  state = await HandedOver.open(stateDir, "bob");
  const handed = [];
  f = follower(state, async (m) => { handed.push(m.id); });
  await until("acknowledged after the restart", async () => (await unread("bob")).length === 0);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(handed, [id]);
  await f.stop();
  await f.done;
});

test("handed over but not acknowledged before a stop: acknowledged, not handed over again", { skip }, async () => {
  const bus = new BusClient({ url });
  const stateDir = path.join(dir, "state3");
  const id = (await bus.send({ from: "alice", to: "bob", content: "taken" })).id;
  const state = await HandedOver.open(stateDir, "bob");
  await state.add(id); // what a gateway killed between the two steps leaves behind
  const handed = [];
  const f = follower(await HandedOver.open(stateDir, "bob"), async (m) => { handed.push(m.id); });
  await until("acknowledged", async () => (await unread("bob")).length === 0);
  assert.deepEqual(handed, []);
  await f.stop();
  await f.done;
});

test("a failed hand-over is tried again; a refused sender's message is acknowledged and holds no floor", { skip }, async () => {
  const bus = new BusClient({ url });
  const state = await HandedOver.open(path.join(dir, "state4"), "bob");
  let failures = 1;
  const handed = [];
  const warnings = [];
  const f = follower(state, async (m) => {
    if (m.from === "carol" && m.content === "blocked by OpenClaw") return "refused";
    if (failures-- > 0) throw new Error("gateway busy");
    handed.push(m.id);
  }, { allowFrom: ["alice", "car*"], log: { ...quiet, warn: (line) => warnings.push(line) } });
  await until("following", async () => f.connected);
  const refused = (await bus.send({ from: "mallory", to: "bob", content: "let me in" })).id;
  const blocked = (await bus.send({ from: "carol", to: "bob", content: "blocked by OpenClaw" })).id;
  const id = (await bus.send({ from: "carol", to: "bob", content: "retry me" })).id;
  await until("handed over after a retry", async () => handed.length === 1 && (await unread("bob")).length === 0);
  assert.deepEqual(handed, [id]);
  for (const settled of [refused, blocked]) {
    assert.ok(warnings.some((w) => w.includes(`message ${settled} `) && w.includes("acknowledged as refused")), warnings.join("\n"));
  }
  // Later mail acknowledged one by one moves the floor past the refused ones:
  // a message sent now is the only unread one, and acknowledged, none is.
  const later = (await bus.send({ from: "alice", to: "bob", content: "after the refusals" })).id;
  await until("the later one handed over", async () => handed.includes(later) && (await unread("bob")).length === 0);
  const read = await bus.request("GET", `/api/inbox?agent=bob&unread=false&after=${refused - 1}&limit=1000`);
  const states = Object.fromEntries(read.messages.map((m) => [m.id, m.read]));
  assert.deepEqual([states[refused], states[blocked], states[id], states[later]], [true, true, true, true]);
  await f.stop();
  await f.done;
});

function count(ids, id) {
  return ids.filter((x) => x === id).length;
}

test("a start while the account's previous follower is still in a turn: every message handed over once", { skip }, async () => {
  const bus = new BusClient({ url });
  const stateDir = path.join(dir, "state5");
  const handed = [];
  let endTurn;
  const turn = new Promise((resolve) => { endTurn = resolve; });
  let inTurn;
  const started = new Promise((resolve) => { inTurn = resolve; });
  const account = (signal, handOver, log = quiet) =>
    followAccount({ stateDir, agent: "bob", client: new BusClient({ url }), log, signal, graceMs: 50, handOver });
  const reloaded = new AbortController();
  const first = account(reloaded.signal, async (m) => { handed.push(m.id); inTurn(m.id); await turn; });
  const slow = (await bus.send({ from: "alice", to: "bob", content: "a long turn" })).id;
  assert.equal(await started, slow);
  reloaded.abort(); // a config reload: the gateway stops the account...
  await first; // ...which answers after its grace, the turn still running
  const lines = [];
  const stopped = new AbortController();
  const second = account(stopped.signal, async (m) => { handed.push(m.id); }, { ...quiet, info: (line) => lines.push(line) });
  await until("the second start waits or follows", async () => lines.length > 0);
  const later = (await bus.send({ from: "carol", to: "bob", content: "after the reload" })).id;
  endTurn();
  await until("both handed over and acknowledged", async () => handed.includes(later) && (await unread("bob")).length === 0);
  stopped.abort();
  await second;
  assert.deepEqual([count(handed, slow), count(handed, later)], [1, 1], `handed over: ${handed.join(", ")}`);
  await until("the lock released once both fully stopped", async () => !existsSync(path.join(stateDir, "bob.json.lock")));
  const kept = await HandedOver.open(stateDir, "bob");
  assert.ok(kept.has(slow) && kept.has(later), "both recorded as handed over");
  await kept.close();
});

test("an empty or corrupt state file does not stop the account", { skip }, async () => {
  const bus = new BusClient({ url });
  for (const [n, text] of [[6, ""], [7, "{\"version\": 1, \"handed\": [1, 2"]]) {
    const stateDir = path.join(dir, `state${n}`);
    await mkdir(stateDir, { recursive: true });
    await writeFile(path.join(stateDir, "bob.json"), text);
    const id = (await bus.send({ from: "alice", to: "bob", content: `state file ${JSON.stringify(text)}` })).id;
    const handed = [];
    const warnings = [];
    const stop = new AbortController();
    const running = followAccount({
      stateDir, agent: "bob", client: new BusClient({ url }), signal: stop.signal,
      log: { ...quiet, warn: (line) => warnings.push(line) },
      handOver: async (m) => { handed.push(m.id); },
    });
    await until("handed over and acknowledged", async () => handed.includes(id) && (await unread("bob")).length === 0);
    stop.abort();
    await running;
    assert.ok(warnings.some((w) => w.includes(path.join(stateDir, "bob.json"))), warnings.join("\n"));
  }
});

test("replies go out as the agent, with reply_to, once per Idempotency-Key", { skip }, async () => {
  const bus = new BusClient({ url });
  const question = (await bus.send({ from: "alice", to: "bob", content: "question" })).id;
  const first = await bus.send({ from: "bob", to: "alice", content: "answer", replyTo: question, idempotencyKey: "openclaw-q:0" });
  const again = await bus.send({ from: "bob", to: "alice", content: "answer", replyTo: question, idempotencyKey: "openclaw-q:0" });
  assert.equal(again.id, first.id);
  assert.equal(again.duplicate, true);
  const inbox = await bus.unread("alice");
  const replies = inbox.filter((m) => m.from === "bob" && m.content === "answer");
  assert.equal(replies.length, 1);
  assert.equal(replies[0].reply_to, question);
  await assert.rejects(bus.send({ from: "bob", to: "nobody", content: "x" }), (e) => e.status === 404 && e.code === "unknown_agent");
  await bus.ack("bob", [question]);
});

test("ids handed over in a stream before it was re-created are handed over again, not just acknowledged", { skip }, async () => {
  const bus = new BusClient({ url });
  const stateDir = path.join(dir, "state-recreated");
  const id = (await bus.send({ from: "alice", to: "bob", content: "same id, other message" })).id;
  const { stream, events } = await bus.openStream("bob");
  await events.return();
  assert.ok(stream, "the adapter names its stream");
  // What a stream before this one leaves: the same id, handed over there.
  await mkdir(stateDir, { recursive: true });
  await writeFile(path.join(stateDir, "bob.json"), JSON.stringify({ version: 1, stream: "2026-01-01T00:00:00Z", handed: [String(id)], open: {} }));
  const state = await HandedOver.open(stateDir, "bob");
  const handed = [];
  const f = follower(state, async (m) => { handed.push(m.id); });
  await until("acknowledged", async () => (await unread("bob")).length === 0);
  assert.deepEqual(handed, [id], "handed over: the id of the stream before named another message");
  assert.equal(state.stream, stream);
  await f.stop();
  await f.done;
  await state.close();
  const reopened = await HandedOver.open(stateDir, "bob");
  assert.equal(reopened.stream, stream, "the file names the stream now followed");
  assert.ok(reopened.has(id));
  await reopened.close();
});
