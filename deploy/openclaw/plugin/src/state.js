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
// File: <state dir>/clawbus/<agent>.json, {"version": 1, "handed": [ids]},
// the newest ids (at most KEEP), written to a temporary file, synced and
// renamed, so a crash leaves either the old or the new list.

import { mkdir, open, readFile, rename } from "node:fs/promises";
import path from "node:path";

const KEEP = 2000;

export class HandedOver {
  constructor(file) {
    this.file = file;
    this.ids = new Set();
    this.order = [];
    this.writing = Promise.resolve();
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
    const snapshot = JSON.stringify({ version: 1, handed: this.order });
    const write = this.writing.then(() => this.write(snapshot));
    this.writing = write.catch(() => {});
    await write;
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
