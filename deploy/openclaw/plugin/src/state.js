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
// File: <state dir>/clawbus/<agent>.json, {"version": 1, "handed": [ids],
// "open": {sender: id}}, the newest ids (at most KEEP), written to a
// temporary file, synced and renamed, so a crash leaves either the old or
// the new list.

import { mkdir, open, readFile, rename } from "node:fs/promises";
import path from "node:path";

const KEEP = 2000;

export class HandedOver {
  constructor(file) {
    this.file = file;
    this.ids = new Set();
    this.order = [];
    this.open = {};
    this.writing = Promise.resolve();
    this.pending = undefined;
  }

  static async open(dir, agent) {
    const state = new HandedOver(path.join(dir, `${agent}.json`));
    await mkdir(dir, { recursive: true });
    let text;
    try {
      text = await readFile(state.file, "utf8");
    } catch (error) {
      if (error?.code !== "ENOENT") throw error;
    }
    if (text !== undefined) {
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new Error(`${state.file} is not the JSON this channel writes; move it away to start afresh`);
      }
      for (const id of Array.isArray(parsed?.handed) ? parsed.handed : []) state.remember(String(id));
      if (parsed?.open && typeof parsed.open === "object") {
        for (const [sender, id] of Object.entries(parsed.open)) state.open[sender] = String(id);
      }
    }
    return state;
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
        return this.write(JSON.stringify({ version: 1, handed: this.order, open: this.open }));
      });
      this.writing = this.pending.catch(() => {});
    }
    await this.pending;
  }

  async write(text) {
    const temporary = `${this.file}.tmp`;
    const handle = await open(temporary, "w", 0o600);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, this.file);
    const dir = await open(path.dirname(this.file), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
