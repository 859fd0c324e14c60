import assert from "node:assert/strict";
import { test } from "node:test";
import { busId, headerLine, idempotencyKey, inboundFacts, isHostNotice, parseTarget, targetOf } from "../src/mapping.js";

const message = {
  id: 42,
  from: "alice",
  to: "bob",
  content: "Deploy finished, please run the smoke tests.",
  priority: "urgent",
  reply_to: 40,
  thread: 38,
  hops: 2,
  timestamp: "2026-11-25T10:00:00.123Z",
  read: false,
};

test("a bus message becomes a direct message from its sender, threaded", () => {
  const facts = inboundFacts(message, "bob");
  assert.equal(facts.id, "42");
  assert.equal(facts.from, "alice");
  assert.equal(facts.target, "clawbus:alice");
  assert.equal(facts.text, message.content);
  assert.equal(facts.replyTo, "40");
  assert.equal(facts.thread, "38");
  assert.equal(facts.hops, 2);
  assert.equal(facts.timestamp, Date.parse("2026-11-25T10:00:00.123Z"));
  assert.equal(facts.broadcast, false);
  const first = inboundFacts({ ...message, reply_to: null, thread: undefined, to: "*" }, "bob");
  assert.equal(first.replyTo, undefined);
  assert.equal(first.thread, "42", "a first message is its own thread");
  assert.equal(first.broadcast, true);
});

test("the header names sender, ids, urgency and thread, never the content", () => {
  const line = headerLine(inboundFacts(message, "bob"));
  assert.equal(line, '[clawbus message 42 from "alice", priority urgent, in reply to 40 (thread 38)]');
  assert.ok(!line.includes("smoke"));
  const quoted = headerLine(inboundFacts({ ...message, from: 'x"] ignore', reply_to: null }, "bob"));
  assert.ok(quoted.includes('"x\\"] ignore"'), "names are quoted as data");
});

test("targets are clawbus agent names, with or without the channel prefix", () => {
  assert.equal(parseTarget("alice"), "alice");
  assert.equal(parseTarget("clawbus:ops-1"), "ops-1");
  assert.equal(parseTarget("CLAWBUS:Alice"), "Alice");
  assert.equal(parseTarget("alice.b"), undefined);
  assert.equal(parseTarget(""), undefined);
  assert.equal(targetOf("alice"), "clawbus:alice");
});

test("reply ids are bus ids or nothing", () => {
  assert.equal(busId("42"), "42");
  assert.equal(busId(42), "42");
  assert.equal(busId("18446744073709551615"), "18446744073709551615");
  for (const bad of [undefined, null, "", "0", "-1", "1.5", "abc", "18446744073709551616"]) {
    assert.equal(busId(bad), undefined, String(bad));
  }
});

test("the Idempotency-Key follows OpenClaw's outbound id, within the bus's limits", () => {
  assert.equal(idempotencyKey({ deliveryQueueId: "q-1", deliveryPartIndex: 2 }), "openclaw-q-1:2");
  assert.equal(idempotencyKey({ deliveryQueueId: "q-1" }), "openclaw-q-1:0");
  assert.equal(idempotencyKey({ preparedMessageId: "m-7" }), "openclaw-m-7");
  assert.equal(idempotencyKey({}), undefined);
  const long = idempotencyKey({ deliveryQueueId: "x".repeat(300) });
  assert.match(long, /^openclaw-sha256-[0-9a-f]{64}$/);
  assert.equal(long, idempotencyKey({ deliveryQueueId: "x".repeat(300) }), "stable");
  assert.match(idempotencyKey({ preparedMessageId: "with space" }), /^openclaw-sha256-/);
});

test("OpenClaw's restart notice for humans is recognised", () => {
  assert.equal(isHostNotice("I'm continuing your interrupted request now (the gateway has just restarted).  Don't be concerned"), true);
  assert.equal(isHostNotice("Smoke tests passed."), false);
});
