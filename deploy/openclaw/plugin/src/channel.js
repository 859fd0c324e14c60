// The clawbus channel: OpenClaw's side. Each configured clawbus agent is an
// account of the channel; its follower hands every message addressed to it
// over as an inbound direct message from the sending agent (a peer with a
// session of its own), and replies and `message` tool sends go back through
// the adapter's /api/send as that agent.

import path from "node:path";
import { randomUUID } from "node:crypto";
import { buildChannelOutboundSessionRoute, createChatChannelPlugin } from "openclaw/plugin-sdk/channel-core";
import { resolveChannelInboundRouteEnvelope } from "openclaw/plugin-sdk/channel-inbound";
import { createMessageReceiptFromOutboundResults, defineChannelMessageAdapter } from "openclaw/plugin-sdk/channel-outbound";
import { isReplyPayloadTerminalContent } from "openclaw/plugin-sdk/reply-payload";
import { resolveStateDir } from "openclaw/plugin-sdk/state-paths";
import { followAccount } from "./account.js";
import { BusClient } from "./client.js";
import { CHANNEL_ID, channelSection, listAccountIds, resolveAccount } from "./config.js";
import { busId, headerLine, idempotencyKey, inboundFacts, isHostNotice, parseTarget, targetOf } from "./mapping.js";

let pluginRuntime;
/** Account id -> what its follower handed over (state.js), while in use. */
const states = new Map();

/** Keeps the runtime OpenClaw hands the plugin at registration. */
export function setClawbusRuntime(runtime) {
  pluginRuntime = runtime;
}

function clientFor(account) {
  return new BusClient({ url: account.url, token: account.token });
}

function requireAccount(cfg, accountId) {
  const account = resolveAccount(cfg, accountId);
  if (!account.agent) {
    throw new Error(`clawbus: no agent for account ${JSON.stringify(accountId ?? "default")}; list it under channels.clawbus.agents`);
  }
  return account;
}

/**
 * Sends `text` as the account's agent; answers the bus id. Without a
 * message it answers, it answers the newest unanswered message from `to`.
 */
async function sendAsAgent({ cfg, accountId, to, text, replyToId, key, signal }) {
  const account = requireAccount(cfg, accountId);
  const peer = parseTarget(to);
  if (!peer) throw new Error(`clawbus: ${JSON.stringify(to)} is not a clawbus agent (use its name, or clawbus:<name>)`);
  const state = states.get(account.accountId);
  const replyTo = busId(replyToId) ?? state?.openFrom(peer);
  const sent = await clientFor(account).send({
    from: account.agent,
    to: peer,
    content: text,
    replyTo,
    idempotencyKey: key ?? `openclaw-${randomUUID()}`,
    signal,
  });
  if (replyTo !== undefined) await state?.answered(peer, replyTo);
  return { to: targetOf(peer), messageId: String(sent.id), duplicate: sent.duplicate === true };
}

/** A send OpenClaw asked for, unless it is a notice for humans (not sent). */
async function outboundText(ctx) {
  if (isHostNotice(ctx.text)) return undefined;
  return await sendAsAgent({
    cfg: ctx.cfg,
    accountId: ctx.accountId,
    to: ctx.to,
    text: ctx.text,
    replyToId: ctx.replyToId,
    key: idempotencyKey(ctx),
    signal: ctx.signal,
  });
}

function receiptOf(messageId, { to, replyToId } = {}) {
  return createMessageReceiptFromOutboundResults({
    results: [{ channel: CHANNEL_ID, messageId, conversationId: to }],
    kind: "text",
    replyToId: replyToId ?? undefined,
  });
}

/**
 * Hands one bus message to OpenClaw and runs the agent's turn; resolves
 * when the turn is over (its reply, if any, sent to the bus), or with
 * "refused" when OpenClaw's ingress policy blocks the sender.
 */
async function handOver({ cfg, account, channelRuntime, state, message, log }) {
  const facts = inboundFacts(message, account.agent);
  const section = channelSection(cfg);
  const { route, buildEnvelope } = resolveChannelInboundRouteEnvelope({
    cfg,
    channel: CHANNEL_ID,
    accountId: account.accountId,
    peer: { kind: "direct", id: facts.from },
    defaultAgentId: account.openclawAgent,
    dmScope: "per-account-channel-peer",
  });
  const ingress = await channelRuntime.inbound.ingress.resolveStable({
    channelId: CHANNEL_ID,
    accountId: account.accountId,
    cfg,
    identity: { key: "sender", entryIdPrefix: "clawbus-entry" },
    subject: { stableId: facts.from },
    conversation: { kind: "direct", id: facts.from },
    contextBinding: {
      agentId: route.agentId,
      sessionKey: route.sessionKey,
      messageId: facts.id,
      inboundEventKind: "user_request",
    },
    dmPolicy: "allowlist",
    allowFrom: account.allowFrom ?? ["*"],
  });
  if (ingress.ingress.admission !== "dispatch") {
    log.warn?.(`message ${facts.id} from ${JSON.stringify(facts.from)} blocked by OpenClaw's ingress policy (${ingress.ingress.admission})`);
    return "refused";
  }
  await state.opened(facts.from, facts.id);
  const text = `${headerLine(facts)}\n${facts.text}`;
  const body = buildEnvelope({ channel: "clawbus", from: facts.from, timestamp: facts.timestamp, body: text });
  const ctxPayload = channelRuntime.inbound.buildContext({
    channel: CHANNEL_ID,
    accountId: route.accountId ?? account.accountId,
    messageId: facts.id,
    messageIdFull: facts.id,
    timestamp: facts.timestamp,
    from: facts.target,
    sender: { id: facts.from, name: facts.from, isBot: true },
    conversation: { kind: "direct", id: facts.from, label: facts.from, threadId: facts.thread },
    route: {
      agentId: route.agentId,
      dmScope: route.dmScope,
      accountId: route.accountId,
      routeSessionKey: route.sessionKey,
      dispatchSessionKey: route.sessionKey,
    },
    reply: {
      to: facts.target,
      originatingTo: facts.target,
      ...(facts.replyTo ? { replyToId: facts.replyTo, replyToIdFull: facts.replyTo } : {}),
    },
    message: { body, bodyForAgent: text, rawBody: facts.text, commandBody: facts.text },
    channelIngress: ingress,
    extra: { CommandInterpretationSuppressed: true },
  });
  let replies = 0;
  let failure;
  const dispatch = await channelRuntime.inbound.dispatch({
    cfg,
    channel: CHANNEL_ID,
    accountId: account.accountId,
    route: { agentId: route.agentId, dmScope: route.dmScope, sessionKey: route.sessionKey },
    ctxPayload,
    botLoopProtection: {
      scopeId: account.accountId,
      conversationId: facts.from,
      senderId: facts.from,
      receiverId: account.agent,
      eventId: facts.id,
      config: section.botLoopProtection,
      defaultsConfig: cfg.channels?.defaults?.botLoopProtection,
      defaultEnabled: true,
    },
    delivery: {
      deliver: async (payload, info) => {
        if (info?.kind !== "final" || !isReplyPayloadTerminalContent(payload) || !payload?.text?.trim()) return;
        // The reply answers the bus message; a turn run again after a
        // restart sends it under the same key, so the bus stores it once.
        const index = replies++;
        const sent = await sendAsAgent({
          cfg,
          accountId: account.accountId,
          to: facts.target,
          text: payload.text,
          replyToId: facts.id,
          key: `openclaw-reply-${account.agent}-${facts.id}-${index}`,
        });
        log.info?.(`${account.agent} answered message ${facts.id} with ${sent.messageId}`);
        return { visibleReplySent: true, messageIds: [sent.messageId], receipt: receiptOf(sent.messageId, { to: facts.target, replyToId: facts.id }) };
      },
      onError: (error) => {
        failure = error;
      },
    },
    replyOptions: { sourceReplyDeliveryMode: "automatic" },
    replyPipeline: {},
  });
  if (failure) log.warn?.(`the reply to message ${facts.id} failed: ${failure?.message ?? failure}`);
  if (dispatch?.admission?.kind && dispatch.admission.kind !== "dispatch") {
    log.info?.(`OpenClaw took message ${facts.id} without a turn (${dispatch.admission.kind})`);
  }
  return "handed";
}

async function startAccount(ctx) {
  const { account } = ctx;
  const log = ctx.log ?? console;
  if (!account.configured) {
    throw new Error(`clawbus channel is not configured for account ${JSON.stringify(account.accountId)}: ${account.problems.join("; ")}`);
  }
  const channelRuntime = ctx.channelRuntime ?? pluginRuntime?.channel;
  if (!channelRuntime?.inbound) throw new Error("clawbus: OpenClaw did not provide the channel runtime");
  ctx.setStatus({ accountId: account.accountId, running: true, configured: true, enabled: account.enabled });
  try {
    await followAccount({
      stateDir: path.join(resolveStateDir(), "clawbus"),
      agent: account.agent,
      client: clientFor(account),
      allowFrom: account.allowFrom,
      log,
      signal: ctx.abortSignal,
      handOver: async (message, state) => {
        // The config as it stands for this message (policy may have changed).
        const cfg = pluginRuntime?.config?.current?.() ?? ctx.cfg;
        return await handOver({ cfg, account, channelRuntime, state, message, log });
      },
      onOpen: (state) => states.set(account.accountId, state),
      onClose: (state) => {
        if (states.get(account.accountId) === state) states.delete(account.accountId);
      },
    });
  } finally {
    ctx.setStatus({ accountId: account.accountId, running: false });
  }
}

const messageAdapter = defineChannelMessageAdapter({
  id: CHANNEL_ID,
  durableFinal: { capabilities: { text: true, replyTo: true } },
  send: {
    text: async (ctx) => {
      const sent = await outboundText(ctx);
      if (!sent) return { outcome: "not_sent", receipt: createMessageReceiptFromOutboundResults({ results: [], kind: "text" }) };
      return { messageId: sent.messageId, receipt: receiptOf(sent.messageId, { to: sent.to, replyToId: ctx.replyToId }) };
    },
  },
});

export const clawbusChannelPlugin = createChatChannelPlugin({
  base: {
    id: CHANNEL_ID,
    meta: {
      id: CHANNEL_ID,
      label: "clawbus",
      selectionLabel: "clawbus (agent message bus)",
      docsPath: "/channels/clawbus",
      blurb: "Messages between the fleet's agents, over the clawbus message bus.",
      order: 80,
    },
    capabilities: { chatTypes: ["direct"] },
    reload: { configPrefixes: [`channels.${CHANNEL_ID}`] },
    config: {
      listAccountIds,
      resolveAccount: (cfg, accountId) => resolveAccount(cfg, accountId),
      defaultAccountId: (cfg) => listAccountIds(cfg)[0] ?? "default",
      isConfigured: (account) => account.configured,
      isEnabled: (account) => account.enabled,
      inspectAccount: (cfg, accountId) => {
        const account = resolveAccount(cfg, accountId);
        return {
          accountId: account.accountId,
          enabled: account.enabled,
          configured: account.configured,
          tokenStatus: account.token ? "available" : "missing",
        };
      },
      resolveAllowFrom: ({ cfg, accountId }) => resolveAccount(cfg, accountId).allowFrom ?? ["*"],
    },
    messaging: {
      normalizeTarget: (raw) => {
        const peer = parseTarget(raw);
        return peer ? targetOf(peer) : undefined;
      },
      inferTargetChatType: () => "direct",
      targetResolver: { looksLikeId: (raw) => parseTarget(raw) !== undefined, hint: "<clawbus agent name>" },
      resolveOutboundSessionRoute: ({ cfg, agentId, accountId, target }) => {
        const peer = parseTarget(target);
        if (!peer) return null;
        return buildChannelOutboundSessionRoute({
          cfg,
          agentId,
          channel: CHANNEL_ID,
          accountId,
          recipientSessionExact: true,
          peer: { kind: "direct", id: peer },
          chatType: "direct",
          from: `clawbus:${accountId ?? "default"}`,
          to: targetOf(peer),
        });
      },
    },
    gateway: { startAccount },
    message: messageAdapter,
  },
  threading: { topLevelReplyToMode: "reply" },
  outbound: {
    base: { deliveryMode: "direct" },
    attachedResults: {
      channel: CHANNEL_ID,
      sendText: async (ctx) => (await outboundText(ctx)) ?? { to: ctx.to, messageId: "" },
    },
  },
});

