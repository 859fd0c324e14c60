import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { HandedOver } from "../src/state.js";

test("handed-over ids and open questions survive a reopen", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "clawbus-state-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const state = await HandedOver.open(dir, "bob");
  assert.equal(state.has("7"), false);
  await state.opened("alice", 7);
  await state.add(7);
  await state.opened("carol", 9);
  await state.answered("carol", 8); // not the open one: stays open
  await state.close();
  const again = await HandedOver.open(dir, "bob");
  assert.equal(again.has(7), true);
  assert.equal(again.openFrom("alice"), "7");
  assert.equal(again.openFrom("carol"), "9");
  await again.answered("alice", "7");
  await again.close();
  const third = await HandedOver.open(dir, "bob");
  assert.equal(third.openFrom("alice"), undefined);
  await third.close();
  assert.deepEqual(JSON.parse(await readFile(path.join(dir, "bob.json"), "utf8")).handed, ["7"]);
});

test("concurrent adds are all written, and the list stays bounded", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "clawbus-state-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const state = await HandedOver.open(dir, "bob");
  await Promise.all(Array.from({ length: 2100 }, (_, i) => state.add(i + 1)));
  await state.close();
  const again = await HandedOver.open(dir, "bob");
  assert.equal(again.has(2100), true);
  assert.equal(again.has(1), false, "the oldest are forgotten");
  assert.equal(again.order.length, 2000);
});

test("two users of one state file writing at once keep every update, in a whole file", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "clawbus-state-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const [a, b] = await Promise.all([HandedOver.open(dir, "bob"), HandedOver.open(dir, "bob")]);
  await Promise.all(
    Array.from({ length: 50 }, (_, i) => [a.add(`a${i}`), b.add(`b${i}`), a.opened(`sender${i}`, `a${i}`), b.opened(`other${i}`, `b${i}`)]).flat(),
  );
  await Promise.all([a.close(), b.close()]);
  const written = JSON.parse(await readFile(path.join(dir, "bob.json"), "utf8"));
  assert.deepEqual(new Set(written.handed), new Set(Array.from({ length: 50 }, (_, i) => [`a${i}`, `b${i}`]).flat()));
  assert.equal(Object.keys(written.open).length, 100);
  assert.deepEqual((await readdir(dir)).filter((name) => name !== "bob.json"), [], "no temporary file left");
});

test("an empty or unreadable state file is taken as no state, with a warning naming it", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "clawbus-state-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const text of ["", "not json", "{\"version\": 1, \"handed\": [\"7\""]) {
    await writeFile(path.join(dir, "bob.json"), text);
    const warnings = [];
    const state = await HandedOver.open(dir, "bob", { log: { warn: (line) => warnings.push(line) } });
    assert.equal(state.has("7"), false);
    assert.ok(warnings.some((w) => w.includes(path.join(dir, "bob.json"))), `${JSON.stringify(text)}: ${warnings.join("\n")}`);
    await state.add("8");
    await state.close();
    const reopened = await HandedOver.open(dir, "bob");
    assert.equal(reopened.has("8"), true, "written afresh");
    await reopened.close();
  }
});

test("temporaries a crash left behind are removed on open, nothing else", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "clawbus-state-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const name of ["bob.json.4242.7.tmp", "bob.json.lock", "bob.json.lock.4242.1.tmp", "bobby.json.4242.7.tmp"]) {
    await writeFile(path.join(dir, name), "");
  }
  const state = await HandedOver.open(dir, "bob");
  await state.close();
  assert.deepEqual((await readdir(dir)).sort(), ["bob.json.lock", "bob.json.lock.4242.1.tmp", "bobby.json.4242.7.tmp"]);
});
