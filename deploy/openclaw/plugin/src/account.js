// One account's follower, as the gateway starts and stops it.
//
// A config reload stops the account and starts it again, and the gateway
// goes on once the stop answered: after the follower's grace (see
// Follower.stop), possibly with a turn still running. That turn's message
// is still unread until the turn ends, so a new follower reading the inbox
// before then would hand it over a second time. So the state file has one
// follower at a time in the process: a start waits until the previous
// follower of the same file has fully stopped (its hand-overs finished and
// recorded), then reads what it handed over. A lock file next to the state
// file (lock.js) does the same between gateway processes.

import { mkdir } from "node:fs/promises";
import path from "node:path";
import { defaultSleep, Follower } from "./follower.js";
import { takeLock } from "./lock.js";
import { HandedOver } from "./state.js";

/** State file -> resolves once its newest follower has fully stopped. */
const followers = new Map();

/**
 * Follows `agent` until `signal` aborts; answers once stopped, after at
 * most `graceMs` for hand-overs in progress, which go on after it answered.
 * `handOver(message, state)`; `onOpen(state)` and `onClose(state)` frame the
 * time the state is in use.
 */
export async function followAccount({ stateDir, agent, client, allowFrom, log, handOver, signal, graceMs, onOpen, onClose }) {
  const file = path.join(stateDir, `${agent}.json`);
  const previous = followers.get(file);
  let stopped;
  const mine = new Promise((resolve) => { stopped = resolve; });
  const turn = (previous ?? Promise.resolve()).then(() => mine);
  followers.set(file, turn);
  let unlock;
  const done = async () => {
    await unlock?.();
    stopped();
    turn.then(() => {
      if (followers.get(file) === turn) followers.delete(file);
    });
  };
  let state;
  try {
    if (previous) {
      log.info?.(`${agent}: waiting for its previous follower to finish the hand-overs it began`);
      await untilSettled(previous, signal);
    }
    await mkdir(stateDir, { recursive: true });
    unlock = await takeLock(`${file}.lock`, { signal, log, sleep: defaultSleep });
    if (!unlock) return await done();
    state = await HandedOver.open(stateDir, agent, { log });
  } catch (error) {
    await done();
    throw error;
  }
  const follower = new Follower({ agent, client, state, allowFrom, log, handOver: (message) => handOver(message, state) });
  onOpen?.(state);
  const stop = () => follower.stop(graceMs);
  signal.addEventListener("abort", stop, { once: true });
  try {
    await follower.run();
  } finally {
    signal.removeEventListener("abort", stop);
    await follower.stop(graceMs);
    follower
      .idle()
      .then(() => state.close())
      .catch((error) => log.error?.(`${agent}: writing its state on the last stop: ${error?.message ?? error}`))
      .finally(() => {
        onClose?.(state);
        return done();
      });
  }
}

/** Resolves when `promise` settles or `signal` aborts. */
function untilSettled(promise, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", resolve, { once: true });
    promise.finally(() => {
      signal.removeEventListener("abort", resolve);
      resolve();
    });
  });
}
