import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
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
  const again = await HandedOver.open(dir, "bob");
  assert.equal(again.has(7), true);
  assert.equal(again.openFrom("alice"), "7");
  assert.equal(again.openFrom("carol"), "9");
  await again.answered("alice", "7");
  assert.equal((await HandedOver.open(dir, "bob")).openFrom("alice"), undefined);
  assert.deepEqual(JSON.parse(await readFile(path.join(dir, "bob.json"), "utf8")).handed, ["7"]);
});

test("concurrent adds are all written, and the list stays bounded", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "clawbus-state-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const state = await HandedOver.open(dir, "bob");
  await Promise.all(Array.from({ length: 2100 }, (_, i) => state.add(i + 1)));
  const again = await HandedOver.open(dir, "bob");
  assert.equal(again.has(2100), true);
  assert.equal(again.has(1), false, "the oldest are forgotten");
  assert.equal(again.order.length, 2000);
});

test("a file this channel did not write is an error naming it", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "clawbus-state-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, "bob.json"), "not json");
  await assert.rejects(HandedOver.open(dir, "bob"), /bob\.json is not the JSON/);
});
