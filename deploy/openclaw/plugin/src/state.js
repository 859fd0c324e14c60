// What the channel handed over to OpenClaw, per clawbus agent, kept on disk
// so that a restart never hands a message over twice.
//
// The bus's read state is the source of truth for what is still to do: a
// message is acknowledged on the bus only after it was handed over and its
// id written here. This file covers the one gap between the two: the
// gateway stopping after OpenClaw took a message and before the bus heard
// the acknowledgement. Such a message is still unread on the bus, but its
// id is here, so it is acknowledged without being handed over again.
//
// It also keeps, per sender, the newest message handed over that the agent
// has not answered yet ("open"): a reply OpenClaw sends without naming the
// message it answers (a turn resumed after a restart does that) answers it.
//
// Ids are the bus stream's sequences, unique only within one incarnation
// of the stream: the file names the incarnation its ids are of, and a
// stream created again (the adapter names another) makes them void.
//
// File: <state dir>/clawbus/<agent>.json, {"version": 1, "stream": name,
// "handed": [ids], "open": {sender: id}}, the newest ids (at most KEEP), written to a
// temporary file of its own (no two writes share one), synced and renamed,
// so a crash leaves either the old or the new list. One instance per file in
// the process, its writes one after the other, so no write undoes another's
// update. A file that is empty or does not parse is taken as no state, with
// a warning: nothing here says what is left to do (the bus's read marks
// do), so the worst it costs is a message handed over again.

import { mkdir, open, readdir, readFile, rename, unlink } from "node:fs/promises";
import path from "node:path";

const KEEP = 2000;

/** State file -> { state, users }: its one instance here, while in use. */
const live = new Map();
/** Numbers this process's temporary files. */
let writes = 0;

export class HandedOver {
  constructor(file) {
    this.file = file;
    this.ids = new Set();
    this.order = [];
    this.open = {};
    /** The bus stream's incarnation the ids are of (undefined: not known). */
    this.stream = undefined;
    this.writing = Promise.resolve();
    this.pending = undefined;
  }

  /**
   * The state of `agent` in `dir`: the instance already in use in this
   * process, or one read from its file. Each `open` wants a `close`.
   */
  static async open(dir, agent, { log } = {}) {
    const file = path.join(dir, `${agent}.json`);
    let entry = live.get(file);
    if (!entry) {
      entry = { state: HandedOver.load(dir, file, log), users: 0 };
      live.set(file, entry);
    }
    entry.users += 1;
    try {
      return await entry.state;
    } catch (error) {
      HandedOver.leave(file, entry);
      throw error;
    }
  }

  static async load(dir, file, log) {
    const state = new HandedOver(file);
    await mkdir(dir, { recursive: true });
    await removeLeftovers(dir, file);
    let text;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      if (error?.code !== "ENOENT") throw error;
    }
    if (text === undefined) return state;
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      log?.warn?.(`${file} is ${text.trim() ? `not the JSON this channel writes (${error.message})` : "empty"}; starting without it (a message handed over just before it was damaged may be handed over again)`);
      return state;
    }
    if (typeof parsed?.stream === "string") state.stream = parsed.stream;
    for (const id of Array.isArray(parsed?.handed) ? parsed.handed : []) state.remember(String(id));
    if (parsed?.open && typeof parsed.open === "object") {
      for (const [sender, id] of Object.entries(parsed.open)) state.open[sender] = String(id);
    }
    return state;
  }

  static leave(file, entry) {
    entry.users -= 1;
    if (entry.users === 0 && live.get(file) === entry) live.delete(file);
  }

  /**
   * Done with this state; resolves once its writes are on disk. The
   * instance stays the file's until then, so a later `open` never reads the
   * file from before a write still under way.
   */
  async close() {
    const entry = live.get(this.file);
    await this.writing;
    if (entry) HandedOver.leave(this.file, entry);
  }

  has(id) {
    return this.ids.has(String(id));
  }

  remember(id) {
    if (this.ids.has(id)) return;
    this.ids.add(id);
    this.order.push(id);
    while (this.order.length > KEEP) this.ids.delete(this.order.shift());
  }

  /** Records `id` as handed over, durably, before resolving. */
  async add(id) {
    this.remember(String(id));
    await this.save();
  }

  /**
   * The adapter names the bus stream's incarnation `stream`. If the ids
   * here are of another one (the stream was deleted and created again),
   * they name other messages now: forgets them, and resolves true.
   */
  async follow(stream) {
    if (stream === undefined || stream === this.stream) return false;
    const other = this.stream !== undefined;
    if (other) {
      this.ids.clear();
      this.order = [];
      this.open = {};
    }
    this.stream = stream;
    await this.save();
    return other;
  }

  /** The newest unanswered message from `sender`, if any. */
  openFrom(sender) {
    return this.open[sender];
  }

  /** `id` from `sender` is being handed over and awaits an answer. */
  async opened(sender, id) {
    this.open[sender] = String(id);
    await this.save();
  }

  /** A message to `sender` answered `id`. */
  async answered(sender, id) {
    if (this.open[sender] !== String(id)) return;
    delete this.open[sender];
    await this.save();
  }

  /**
   * Writes the state; resolves once a write that began after this call has
   * finished. Calls while a write is waiting share it.
   */
  async save() {
    if (!this.pending) {
      this.pending = this.writing.then(() => {
        this.pending = undefined;
        return this.write(JSON.stringify({ version: 1, stream: this.stream, handed: this.order, open: this.open }));
      });
      this.writing = this.pending.catch(() => {});
    }
    await this.pending;
  }

  async write(text) {
    const temporary = `${this.file}.${process.pid}.${++writes}.tmp`;
    try {
      const handle = await open(temporary, "wx", 0o600);
      try {
        await handle.writeFile(text);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, this.file);
    } catch (error) {
      await unlink(temporary).catch(() => {});
      throw error;
    }
    const dir = await open(path.dirname(this.file), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

/**
 * Removes temporaries of `file` a crash left behind: read before any write
 * of this instance, and under the agent's lock (lock.js), none is in use.
 */
async function removeLeftovers(dir, file) {
  const prefix = `${path.basename(file)}.`;
  for (const name of await readdir(dir)) {
    if (name.startsWith(prefix) && /^\d+\.\d+\.tmp$/.test(name.slice(prefix.length))) {
      await unlink(path.join(dir, name)).catch(() => {});
    }
  }
}
