import assert from "node:assert/strict";
import { test } from "node:test";
import { accountIdOf, allowed, configProblems, listAccountIds, resolveAccount } from "../src/config.js";

const cfg = (clawbus) => ({ channels: { clawbus } });

test("each clawbus agent is an account, delivered to its OpenClaw agent", () => {
  const config = cfg({ url: "http://127.0.0.1:9000/", token: "t", agents: { Bob: "main", carol: "carol" } });
  assert.deepEqual(listAccountIds(config), ["bob", "carol"]);
  const bob = resolveAccount(config, "bob");
  assert.equal(bob.agent, "Bob");
  assert.equal(bob.openclawAgent, "main");
  assert.equal(bob.url, "http://127.0.0.1:9000");
  assert.equal(bob.token, "t");
  assert.equal(bob.configured, true);
  assert.equal(resolveAccount(config, "default").agent, "Bob", "the default account is the first agent");
  assert.equal(resolveAccount(config, "nobody").configured, false);
});

test("the adapter URL defaults to the local adapter's", () => {
  assert.equal(resolveAccount(cfg({ agents: { bob: "bob" } })).url, "http://127.0.0.1:8091");
});

test("every problem of the section is named by its key", () => {
  assert.deepEqual(configProblems({ agents: { bob: "bob" } }), []);
  const problems = configProblems({
    url: "ftp://x",
    token: "",
    agents: { "a.b": "x", bob: "", Bob: "b" },
    allowFrom: ["ok", "bad name"],
  }).join("\n");
  for (const key of ["channels.clawbus.url", "channels.clawbus.token", "channels.clawbus.agents.a.b", "channels.clawbus.agents.bob", "differ only in case", "channels.clawbus.allowFrom"]) {
    assert.ok(problems.includes(key), `${key} missing from:\n${problems}`);
  }
  assert.match(configProblems({}).join(), /channels\.clawbus\.agents: required/);
  assert.equal(resolveAccount(cfg({ url: "nope", agents: { bob: "bob" } })).configured, false);
});

test("allowFrom narrows who may write: names and prefixes", () => {
  assert.equal(allowed(undefined, "anyone"), true);
  assert.equal(allowed(["*"], "anyone"), true);
  assert.equal(allowed(["alice", "ops-*"], "alice"), true);
  assert.equal(allowed(["alice", "ops-*"], "ops-1"), true);
  assert.equal(allowed(["alice", "ops-*"], "mallory"), false);
  assert.equal(allowed(["alice"], "Alice"), false, "names are case-sensitive, as on the bus");
  assert.equal(accountIdOf(" Bob "), "bob");
});

test("each agent may have its own API token; token is the fallback", () => {
  const config = cfg({ token: "shared", tokens: { bob: "bobs" }, agents: { bob: "bob", carol: "carol" } });
  assert.equal(resolveAccount(config, "bob").token, "bobs");
  assert.equal(resolveAccount(config, "carol").token, "shared");
  assert.match(configProblems({ tokens: { dave: "x" }, agents: { bob: "bob" } }).join(), /channels\.clawbus\.tokens\.dave/);
  assert.match(configProblems({ tokens: { bob: "" }, agents: { bob: "bob" } }).join(), /channels\.clawbus\.tokens/);
});
