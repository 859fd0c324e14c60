// Mapping between clawbus messages and OpenClaw's channel facts. Pure.

import { createHash } from "node:crypto";

const TARGET = /^(?:clawbus:)?([A-Za-z0-9_-]{1,64})$/i;

/** The clawbus agent a target names ("alice" or "clawbus:alice"), or undefined. */
export function parseTarget(raw) {
  const match = TARGET.exec(String(raw ?? "").trim());
  return match ? match[1] : undefined;
}

/** OpenClaw's target string for a clawbus agent. */
export function targetOf(agent) {
  return `clawbus:${agent}`;
}

/** A message id as the bus takes it (a whole number from 1), or undefined. */
export function busId(value) {
  if (value === undefined || value === null) return undefined;
  const text = String(value).trim();
  if (!/^[0-9]{1,20}$/.test(text)) return undefined;
  const id = BigInt(text);
  return id >= 1n && id <= 18446744073709551615n ? text : undefined;
}

/**
 * What OpenClaw needs to know about one inbound bus message: who wrote it
 * (the peer, whose conversation with this agent is its own session), the
 * content, and the threading (the message answered, and the thread's first
 * message).
 */
export function inboundFacts(message, agent) {
  const from = String(message.from);
  const id = String(message.id);
  const thread = message.thread !== undefined && message.thread !== null ? String(message.thread) : id;
  const replyTo = message.reply_to !== undefined && message.reply_to !== null ? String(message.reply_to) : undefined;
  const timestamp = Date.parse(message.timestamp);
  return {
    id,
    from,
    to: agent,
    broadcast: message.to === "*",
    target: targetOf(from),
    text: String(message.content ?? ""),
    priority: message.priority ?? "normal",
    replyTo,
    thread,
    hops: Number.isInteger(message.hops) ? message.hops : 0,
    timestamp: Number.isFinite(timestamp) ? timestamp : Date.now(),
  };
}

/**
 * The line above the content in the agent's prompt body: sender, ids and
 * threading, so the agent can refer to them. Never the content itself.
 */
export function headerLine(facts) {
  const parts = [`clawbus message ${facts.id} from ${JSON.stringify(facts.from)}`];
  if (facts.broadcast) parts.push("broadcast to every agent");
  if (facts.priority !== "normal") parts.push(`priority ${facts.priority}`);
  if (facts.replyTo) parts.push(`in reply to ${facts.replyTo} (thread ${facts.thread})`);
  return `[${parts.join(", ")}]`;
}

/**
 * The `Idempotency-Key` of an outbound send, derived from OpenClaw's id for
 * it (its durable delivery id and the part's index, or the id it reserved):
 * a send OpenClaw retries is stored once. Keys are printable ASCII of at
 * most 128 characters; longer ids are hashed.
 */
export function idempotencyKey({ deliveryQueueId, deliveryPartIndex, preparedMessageId } = {}) {
  let raw;
  if (deliveryQueueId) raw = `${deliveryQueueId}:${deliveryPartIndex ?? 0}`;
  else if (preparedMessageId) raw = String(preparedMessageId);
  else return undefined;
  const key = `openclaw-${raw}`;
  if (key.length <= 128 && /^[\x21-\x7e]+$/.test(key)) return key;
  return `openclaw-sha256-${createHash("sha256").update(raw).digest("hex")}`;
}

/**
 * Status notices OpenClaw writes for the humans of a chat (the notice that a
 * turn resumes after a gateway restart). To another agent they are noise
 * that invites an answer, so they are not sent over the bus.
 */
export function isHostNotice(text) {
  return String(text ?? "").startsWith("I'm continuing your interrupted request now (the gateway has just restarted).");
}
