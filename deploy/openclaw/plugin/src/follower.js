// Follows one clawbus agent's mail and hands each message over, in order per
// sender, acknowledging it on the bus only once it was handed over and
// recorded as such (see state.js). A message it will not hand over (its
// sender refused) is acknowledged at once, with a warning.
//
// Exact resumption, from the bus's read state: on every (re)connection the
// live stream is opened first (the adapter fixes its starting point, the
// next message to be stored, before it answers), then the unread inbox is
// read. Every message stored before the stream started and still unread is
// in the inbox; every one stored after comes on the stream; one in both is
// handed over once.

import { allowed } from "./config.js";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;

export class Follower {
  /**
   * `handOver(message)` resolves once OpenClaw has taken the message (and
   * throws to have it tried again); `log` has info/warn/error.
   */
  constructor({ agent, client, state, handOver, allowFrom, log, sleep = defaultSleep }) {
    this.agent = agent;
    this.client = client;
    this.state = state;
    this.handOver = handOver;
    this.allowFrom = allowFrom;
    this.log = log;
    this.sleep = sleep;
    this.seen = new Set();
    this.lanes = new Map();
    this.controller = new AbortController();
    this.connected = false;
  }

  get signal() {
    return this.controller.signal;
  }

  /** Runs until `stop()`. */
  async run() {
    let backoff = BACKOFF_MIN_MS;
    while (!this.signal.aborted) {
      try {
        const { stream, events } = await this.client.openStream(this.agent, { signal: this.signal });
        if (await this.state.follow(stream)) {
          // The bus's stream was created again: its ids name other messages.
          this.seen.clear();
          this.log.warn?.(`the bus's message stream of ${this.agent} was re-created; what was handed over before no longer counts`);
        }
        const backlog = await this.client.unread(this.agent, { signal: this.signal });
        this.connected = true;
        backoff = BACKOFF_MIN_MS;
        this.log.info?.(`following ${this.agent} (${backlog.length} unread)`);
        for (const message of backlog) this.enqueue(message);
        for await (const event of events) {
          if (event.event !== "message") continue;
          let message;
          try {
            message = JSON.parse(event.data);
          } catch {
            this.log.warn?.(`skipped a stream event of ${this.agent} that is not a message`);
            continue;
          }
          if (message.read !== true) this.enqueue(message);
        }
        if (!this.signal.aborted) this.log.warn?.(`the live stream of ${this.agent} ended; reconnecting`);
      } catch (error) {
        if (this.signal.aborted) break;
        this.log.warn?.(`${this.agent}: ${error?.message ?? error}; reconnecting in ${backoff} ms`);
      }
      this.connected = false;
      await this.sleep(backoff, this.signal);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  /** Stops following; waits (up to `graceMs`) for hand-overs in progress. */
  async stop(graceMs = 5000) {
    this.controller.abort();
    const pending = Promise.allSettled([...this.lanes.values()]);
    await Promise.race([pending, new Promise((resolve) => setTimeout(resolve, graceMs).unref?.())]);
  }

  /** Resolves once every message enqueued so far is done with. */
  async idle() {
    while (this.lanes.size > 0) await Promise.allSettled([...this.lanes.values()]);
  }

  enqueue(message) {
    const id = String(message.id);
    if (this.seen.has(id)) return;
    this.seen.add(id);
    const lane = String(message.from);
    const previous = this.lanes.get(lane) ?? Promise.resolve();
    const next = previous.then(() => this.process(message)).catch((error) => {
      this.log.error?.(`message ${id} for ${this.agent}: ${error?.message ?? error}`);
    });
    this.lanes.set(lane, next);
    next.then(() => {
      if (this.lanes.get(lane) === next) this.lanes.delete(lane);
    });
  }

  async process(message) {
    const id = String(message.id);
    if (this.signal.aborted) return this.forget(id);
    if (this.state.has(id)) {
      // Handed over before the last stop, acknowledgement unheard.
      await this.acknowledge(id);
      return;
    }
    if (!allowed(this.allowFrom, String(message.from))) {
      return await this.settleRefused(message, "the sender is not in channels.clawbus.allowFrom");
    }
    let backoff = BACKOFF_MIN_MS;
    for (;;) {
      if (this.signal.aborted) return this.forget(id);
      try {
        if ((await this.handOver(message)) === "refused") {
          return await this.settleRefused(message, "OpenClaw's ingress policy blocked the sender");
        }
        break;
      } catch (error) {
        if (this.signal.aborted) return this.forget(id);
        this.log.warn?.(`handing message ${id} to ${this.agent} failed: ${error?.message ?? error}; trying again in ${backoff} ms`);
        await this.sleep(backoff, this.signal);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
    await this.state.add(id);
    await this.acknowledge(id);
  }

  /**
   * A message that will never be handed over is acknowledged all the same,
   * saying so: left unread, it would be offered again on every reconnection
   * and keep the agent's read floor below it for good. It stays in the
   * bus's history.
   */
  async settleRefused(message, why) {
    const id = String(message.id);
    this.log.warn?.(
      `message ${id} from ${JSON.stringify(message.from)} to ${this.agent} is not handed over: ${why}; ` +
        `acknowledged as refused (it stays in the bus's history)`,
    );
    await this.acknowledge(id);
  }

  async acknowledge(id) {
    let backoff = BACKOFF_MIN_MS;
    for (;;) {
      try {
        await this.client.ack(this.agent, [id]);
        this.seen.delete(id);
        return;
      } catch (error) {
        // Unheard acknowledgements are repeated after a restart (state.js).
        if (this.signal.aborted) return;
        this.log.warn?.(`acknowledging message ${id} of ${this.agent} failed: ${error?.message ?? error}; trying again in ${backoff} ms`);
        await this.sleep(backoff, this.signal);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
  }

  forget(id) {
    this.seen.delete(id);
  }
}

/** Sleeps `ms`, or until `signal` aborts. */
export function defaultSleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
