import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { defaultSleep } from "../src/follower.js";
import { startedAt, takeLock } from "../src/lock.js";

async function lockDir(t) {
  const dir = await mkdtemp(path.join(tmpdir(), "clawbus-lock-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, "bob.json.lock");
}

function holderOf(pid) {
  return JSON.stringify({ host: hostname(), pid, started: startedAt(pid) });
}

test("a lock held by a live process is waited for, then taken once it is gone", async (t) => {
  const file = await lockDir(t);
  const other = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  t.after(() => other.kill("SIGKILL"));
  await new Promise((resolve) => other.once("spawn", resolve));
  await writeFile(file, holderOf(other.pid));
  const warnings = [];
  let waiting;
  const told = new Promise((resolve) => { waiting = resolve; });
  const taking = takeLock(file, {
    signal: new AbortController().signal,
    sleep: defaultSleep,
    log: { warn: (line) => { warnings.push(line); waiting(); } },
  });
  await told;
  assert.equal(JSON.parse(await readFile(file, "utf8")).pid, other.pid, "still the other's");
  other.kill("SIGKILL");
  await new Promise((resolve) => (other.exitCode !== null || other.signalCode !== null ? resolve() : other.once("exit", resolve)));
  const release = await taking;
  assert.equal(JSON.parse(await readFile(file, "utf8")).pid, process.pid);
  await release();
  await assert.rejects(readFile(file, "utf8"), { code: "ENOENT" });
});

test("a lock left by a crashed process, by this pid's earlier run, by a pid now another's, or damaged, is taken over at once", async (t) => {
  const file = await lockDir(t);
  const gone = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => gone.once("exit", resolve));
  const left = [JSON.stringify({ host: hostname(), pid: gone.pid }), holderOf(process.pid), "{\"host\": "];
  const reused = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  t.after(() => reused.kill("SIGKILL"));
  await new Promise((resolve) => reused.once("spawn", resolve));
  if (startedAt(reused.pid) !== undefined) left.push(JSON.stringify({ host: hostname(), pid: reused.pid, started: "0" }));
  else t.diagnostic("no /proc here: a reused pid is not told apart");
  for (const text of left) {
    await writeFile(file, text);
    const warnings = [];
    const release = await takeLock(file, { signal: new AbortController().signal, sleep: defaultSleep, log: { warn: (line) => warnings.push(line) } });
    assert.ok(release, text);
    assert.ok(warnings.some((w) => w.includes("taking it over")), `${text}: ${warnings.join("\n")}`);
    assert.equal(JSON.parse(await readFile(file, "utf8")).pid, process.pid);
    await release();
  }
});

test("waiting for a lock ends when the start is called off", async (t) => {
  const file = await lockDir(t);
  await writeFile(file, JSON.stringify({ host: `not-${hostname()}`, pid: 1 }));
  const called = new AbortController();
  const taking = takeLock(file, { signal: called.signal, sleep: defaultSleep, log: { warn: () => called.abort() } });
  assert.equal(await taking, undefined);
  assert.equal(JSON.parse(await readFile(file, "utf8")).host, `not-${hostname()}`, "the other host's lock is left alone");
});

test("another host's lock left unchanged for the stale time is taken over", async (t) => {
  const file = await lockDir(t);
  await writeFile(file, JSON.stringify({ host: `not-${hostname()}`, pid: 1 }));
  const warnings = [];
  const release = await takeLock(file, {
    signal: new AbortController().signal,
    sleep: defaultSleep,
    staleMs: 1,
    log: { warn: (line) => warnings.push(line) },
  });
  assert.ok(warnings.some((w) => w.includes("its holder is gone")), warnings.join("\n"));
  assert.equal(JSON.parse(await readFile(file, "utf8")).pid, process.pid);
  await release();
});
