// The channel's settings (`channels.clawbus` in openclaw.json), checked and
// resolved. Pure: no I/O, no OpenClaw imports, so it is tested on any Node.
//
//   channels: {
//     clawbus: {
//       url: "http://127.0.0.1:8091",   // the local clawbus adapter
//       token: "…",                       // its API token, when it has tokens
//       tokens: { bob: "…" },             // or one per agent (each agent's own)
//       agents: { bob: "bob" },           // clawbus agent -> OpenClaw agent id
//       allowFrom: ["alice", "ops-*"],    // optional: who may write (default: every agent of the bus)
//     },
//   }
//
// Each clawbus agent is one account of the channel; its account id is the
// agent's name in lower case (OpenClaw normalises account ids that way).

export const CHANNEL_ID = "clawbus";
export const DEFAULT_URL = "http://127.0.0.1:8091";
const AGENT_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** The raw `channels.clawbus` section of a config (or an empty one). */
export function channelSection(cfg) {
  const section = cfg?.channels?.[CHANNEL_ID];
  return section && typeof section === "object" ? section : {};
}

/** OpenClaw's form of an account id. */
export function accountIdOf(agentName) {
  return String(agentName).trim().toLowerCase();
}

/**
 * Every problem of a `channels.clawbus` section, as sentences naming the key
 * (empty when it is fine).
 */
export function configProblems(section) {
  const problems = [];
  const key = (k) => `channels.${CHANNEL_ID}.${k}`;
  if (section.url !== undefined) {
    let url;
    try {
      url = new URL(section.url);
    } catch {
      url = undefined;
    }
    if (!url || !["http:", "https:"].includes(url.protocol)) {
      problems.push(`${key("url")}: ${JSON.stringify(section.url)} is not an http(s) URL of a clawbus adapter`);
    }
  }
  if (section.token !== undefined && (typeof section.token !== "string" || !section.token.trim())) {
    problems.push(`${key("token")}: must be a non-empty string (the adapter's API token for the agent)`);
  }
  if (section.tokens !== undefined) {
    const tokens = section.tokens;
    if (!tokens || typeof tokens !== "object" || Array.isArray(tokens) || Object.values(tokens).some((t) => typeof t !== "string" || !t.trim())) {
      problems.push(`${key("tokens")}: a map of clawbus agent name to its API token (non-empty strings)`);
    } else {
      for (const name of Object.keys(tokens)) {
        if (!section.agents || typeof section.agents !== "object" || !Object.hasOwn(section.agents, name)) {
          problems.push(`${key(`tokens.${name}`)}: ${JSON.stringify(name)} is not listed under channels.${CHANNEL_ID}.agents`);
        }
      }
    }
  }
  const agents = section.agents;
  if (agents === undefined || agents === null || typeof agents !== "object" || Array.isArray(agents)) {
    problems.push(`${key("agents")}: required, a map of clawbus agent name to OpenClaw agent id, e.g. { "bob": "bob" }`);
  } else {
    const seen = new Map();
    for (const [name, agentId] of Object.entries(agents)) {
      if (!AGENT_NAME.test(name)) {
        problems.push(`${key(`agents.${name}`)}: ${JSON.stringify(name)} is not a clawbus agent name (letters, digits, _ and -, at most 64)`);
      }
      if (typeof agentId !== "string" || !agentId.trim()) {
        problems.push(`${key(`agents.${name}`)}: the OpenClaw agent id must be a non-empty string`);
      }
      const account = accountIdOf(name);
      if (seen.has(account)) {
        problems.push(`${key("agents")}: ${JSON.stringify(seen.get(account))} and ${JSON.stringify(name)} differ only in case; the channel cannot tell them apart`);
      }
      seen.set(account, name);
    }
  }
  if (section.allowFrom !== undefined) {
    if (!Array.isArray(section.allowFrom) || section.allowFrom.some((p) => typeof p !== "string" || !validPattern(p))) {
      problems.push(`${key("allowFrom")}: a list of clawbus agent names, or prefixes ending in "*" ("*" alone: everyone)`);
    }
  }
  return problems;
}

function validPattern(pattern) {
  const name = pattern.endsWith("*") ? pattern.slice(0, -1) : pattern;
  return (name === "" && pattern === "*") || AGENT_NAME.test(name);
}

/** Whether `sender` may write, given `allowFrom` (absent: everyone). */
export function allowed(allowFrom, sender) {
  if (!Array.isArray(allowFrom)) return true;
  return allowFrom.some((p) => (p.endsWith("*") ? sender.startsWith(p.slice(0, -1)) : p === sender));
}

/** Account ids, one per configured clawbus agent. */
export function listAccountIds(cfg) {
  const agents = channelSection(cfg).agents;
  if (!agents || typeof agents !== "object") return [];
  return Object.keys(agents).map(accountIdOf);
}

/**
 * One account: the clawbus agent, the OpenClaw agent it is delivered to, and
 * the adapter to reach. `accountId` absent or "default" picks the only agent
 * (or the first, when there are several).
 */
export function resolveAccount(cfg, accountId) {
  const section = channelSection(cfg);
  const problems = configProblems(section);
  const agents = section.agents && typeof section.agents === "object" ? Object.entries(section.agents) : [];
  const wanted = accountId && accountId !== "default" ? accountIdOf(accountId) : undefined;
  const entry = wanted ? agents.find(([name]) => accountIdOf(name) === wanted) : agents[0];
  const [name, openclawAgent] = entry ?? [undefined, undefined];
  return {
    accountId: name ? accountIdOf(name) : (wanted ?? "default"),
    agent: name,
    openclawAgent: typeof openclawAgent === "string" ? openclawAgent.trim() : undefined,
    url: String(section.url ?? DEFAULT_URL).replace(/\/+$/, ""),
    token: tokenFor(section, name),
    allowFrom: Array.isArray(section.allowFrom) ? section.allowFrom : undefined,
    enabled: section.enabled !== false,
    configured: Boolean(name) && problems.length === 0,
    problems: name ? problems : [...problems, ...(wanted ? [`channels.${CHANNEL_ID}.agents: no agent for account ${JSON.stringify(wanted)}`] : [])],
  };
}

/** The API token to use for `agent`: its own under `tokens`, else `token`. */
function tokenFor(section, agent) {
  const own = agent !== undefined && section.tokens && typeof section.tokens === "object" ? section.tokens[agent] : undefined;
  const token = typeof own === "string" && own.trim() ? own : section.token;
  return typeof token === "string" && token.trim() ? token.trim() : undefined;
}
