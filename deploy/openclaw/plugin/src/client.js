// A small client of the clawbus adapter's HTTP API (send, inbox, ack, and
// the live stream). Uses the global fetch (Node 20+).

/** A refusal or failure of the adapter, with its status and error code. */
export class BusError extends Error {
  constructor(message, { status, code, retryAfterMs } = {}) {
    super(message);
    this.name = "BusError";
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }

  /** Whether trying again later may succeed (no answer, 408, 429, 5xx). */
  get retryable() {
    return this.status === undefined || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

export class BusClient {
  /** `url`: the adapter's base URL; `token`: its API token, if it has tokens. */
  constructor({ url, token, fetchImpl = globalThis.fetch, timeoutMs = 15000 }) {
    this.url = String(url).replace(/\/+$/, "");
    this.token = token;
    this.fetch = fetchImpl;
    this.timeoutMs = timeoutMs;
  }

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    return headers;
  }

  async request(method, path, { body, headers, signal } = {}) {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const init = {
      method,
      headers: this.headers(body === undefined ? headers : { "content-type": "application/json", ...headers }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    };
    let response;
    try {
      response = await this.fetch(`${this.url}${path}`, init);
    } catch (error) {
      throw new BusError(`clawbus adapter at ${this.url} did not answer ${method} ${path}: ${error?.cause?.message ?? error?.message ?? error}`);
    }
    const text = await response.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!response.ok) {
      const retryAfter = Number(response.headers.get("retry-after"));
      throw new BusError(
        `clawbus ${method} ${path} answered ${response.status}${json?.error ? ` ${json.error}` : ""}: ${json?.message ?? text.slice(0, 300)}`,
        { status: response.status, code: json?.error, retryAfterMs: Number.isFinite(retryAfter) ? retryAfter * 1000 : undefined },
      );
    }
    return json;
  }

  /** Sends as `from`; answers `{ok, id, timestamp, duplicate?}`. */
  async send({ from, to, content, priority, replyTo, idempotencyKey, signal }) {
    const body = { from, to, content };
    if (priority && priority !== "normal") body.priority = priority;
    if (replyTo !== undefined) body.reply_to = Number(replyTo);
    const headers = idempotencyKey ? { "idempotency-key": idempotencyKey } : {};
    return await this.request("POST", "/api/send", { body, headers, signal });
  }

  /** Every unread message of `agent`, oldest first (all pages). */
  async unread(agent, { signal } = {}) {
    const messages = [];
    let after = 0;
    for (;;) {
      const page = await this.request(
        "GET",
        `/api/inbox?agent=${encodeURIComponent(agent)}&unread=true&limit=1000&after=${after}`,
        { signal },
      );
      const got = page?.messages ?? [];
      messages.push(...got);
      if (got.length < 1000) return messages;
      after = got[got.length - 1].id;
    }
  }

  /** Marks `ids` read for `agent`. */
  async ack(agent, ids, { signal } = {}) {
    return await this.request("POST", "/api/ack", { body: { agent, ids: ids.map(Number) }, signal });
  }

  /**
   * Opens `agent`'s live stream (from the next message stored, or after
   * `after`). Resolves once the adapter answered, that is once the stream's
   * starting point is fixed, to `{stream, events}`: `events` yields each
   * message, in order, until the stream ends or `signal` aborts; `stream`
   * names the bus stream's incarnation (the adapter's `Clawbus-Stream`
   * header; undefined from an adapter that does not send it). Message ids
   * are only unique within one incarnation.
   */
  async openStream(agent, { after, signal } = {}) {
    const query = after === undefined ? "" : `&after=${after}`;
    let response;
    try {
      response = await this.fetch(`${this.url}/api/stream?agent=${encodeURIComponent(agent)}${query}`, {
        headers: this.headers({ accept: "text/event-stream" }),
        signal,
      });
    } catch (error) {
      throw new BusError(`clawbus adapter at ${this.url} did not answer GET /api/stream: ${error?.cause?.message ?? error?.message ?? error}`);
    }
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      throw new BusError(`clawbus GET /api/stream answered ${response.status}: ${text.slice(0, 300)}`, { status: response.status });
    }
    return { stream: response.headers.get("clawbus-stream") ?? undefined, events: parseSse(response.body, signal) };
  }
}

/**
 * Server-Sent Events from a byte stream: yields `{event, id, data}` for
 * each event (comments and keep-alives skipped).
 */
export async function* parseSse(body, signal) {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { event: "message", id: undefined, data: [] };
  const reader = body.getReader();
  try {
    for (;;) {
      if (signal?.aborted) return;
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (event.data.length > 0) yield { event: event.event, id: event.id, data: event.data.join("\n") };
          event = { event: "message", id: undefined, data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event.event = value;
        else if (field === "id") event.id = value;
        else if (field === "data") event.data.push(value);
      }
    }
  } finally {
    reader.releaseLock?.();
    await body.cancel?.().catch(() => {});
  }
}
