// A lock file saying which gateway process follows an agent, so that two
// gateways sharing a state directory never follow one agent at once.
//
// The lock holds {host, pid, started}: `started` is the process's start
// time from /proc where there is one, so a pid used again after a crash
// (a container's gateway restarted under the same pid, say) is not taken
// for the holder. A lock of this host whose process is gone, or is this
// process (which never takes a lock twice: see account.js), is stale and
// taken over at once, with a warning. The holder also touches the file
// every REFRESH_MS; a lock seen unchanged for STALE_MS by the waiter's own
// clock (no clocks compared) is stale too, whatever its host: a container
// created anew has a new host name, and its predecessor's lock must not
// block it for good.

import { readFileSync } from "node:fs";
import { link, readFile, rename, stat, unlink, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";

const POLL_MS = 1000;
const REFRESH_MS = 10000;
const STALE_MS = 60000;
let temporaries = 0;

/** The identity of process `pid`: its start time, where /proc says it. */
export function startedAt(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/**
 * Takes the lock `file`, waiting while another live process holds it;
 * answers a function that releases it, or undefined if `signal` aborted first.
 */
export async function takeLock(file, { signal, log, sleep, staleMs = STALE_MS }) {
  const mine = JSON.stringify({ host: hostname(), pid: process.pid, started: startedAt(process.pid) });
  let told = false;
  let seen;
  while (!signal.aborted) {
    if (await create(file, mine)) return held(file, log);
    const [text, modified] = await Promise.all([
      readFile(file, "utf8").catch(() => undefined),
      stat(file).then((s) => s.mtimeMs, () => undefined),
    ]);
    if (seen?.text !== text || seen?.modified !== modified) seen = { text, modified, since: performance.now() };
    const why = text === undefined ? undefined : (stale(text) ?? unrefreshed(seen, staleMs));
    if (why) {
      log.warn?.(`${file}: ${why}; taking it over`);
      await removeIf(file, text);
      continue;
    }
    if (!told && text !== undefined) {
      log.warn?.(`${file} is held by ${text}; waiting for it`);
      told = true;
    }
    await sleep(POLL_MS, signal);
  }
  return undefined;
}

/** Keeps the taken lock `file` fresh; answers the function that releases it. */
function held(file, log) {
  const refresh = setInterval(() => {
    const now = new Date();
    utimes(file, now, now).catch((error) => log.error?.(`${file}: could not refresh the lock: ${error?.message ?? error}`));
  }, REFRESH_MS);
  refresh.unref?.();
  return async () => {
    clearInterval(refresh);
    await unlink(file).catch(() => {});
  };
}

/** Creates `file` holding `text`, whole or not at all; false if it exists. */
async function create(file, text) {
  const temporary = `${file}.${process.pid}.${++temporaries}.tmp`;
  await writeFile(temporary, text, { mode: 0o600 });
  try {
    await link(temporary, file);
    return true;
  } catch (error) {
    if (error?.code === "EEXIST") return false;
    throw error;
  } finally {
    await unlink(temporary).catch(() => {});
  }
}

/** Why the lock `text` is stale, or undefined while its holder may live. */
function stale(text) {
  let holder;
  try {
    holder = JSON.parse(text);
  } catch {
    return "not a lock this channel writes";
  }
  if (holder?.host !== hostname()) return undefined;
  if (holder.pid === process.pid) return "left by an earlier run of this process's pid";
  try {
    process.kill(holder.pid, 0);
  } catch (error) {
    if (error?.code === "ESRCH") return `its process ${holder.pid} is gone`;
  }
  const started = startedAt(holder.pid);
  if (holder.started !== undefined && started !== undefined && started !== holder.started) {
    return `its process ${holder.pid} is gone (the pid now names another)`;
  }
  return undefined;
}

/** Why a lock `seen` unchanged since `seen.since` is stale, if it is by now. */
function unrefreshed(seen, staleMs) {
  if (performance.now() - seen.since >= staleMs) return `unchanged for ${Math.round(staleMs / 1000)} s: its holder is gone`;
  return undefined;
}

/**
 * Removes the lock `file` if it still holds `text`: moved aside first, and
 * put back if another process had taken it meanwhile.
 */
async function removeIf(file, text) {
  const aside = `${file}.${process.pid}.${++temporaries}.stale`;
  try {
    await rename(file, aside);
  } catch (error) {
    if (error?.code === "ENOENT") return;
    throw error;
  }
  if ((await readFile(aside, "utf8").catch(() => text)) !== text) await link(aside, file).catch(() => {});
  await unlink(aside).catch(() => {});
}
