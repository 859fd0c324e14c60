#!/usr/bin/env python3
"""A stand-in model provider for scripts/e2e-openclaw.sh.

Serves the OpenAI-compatible chat completions endpoint that OpenClaw calls
for a provider declared with `api: "openai-completions"`:

    POST /v1/chat/completions   (plain JSON, or SSE chunks with "stream": true,
                                 which is what OpenClaw 2026.9 sends, with
                                 stream_options.include_usage)
    GET  /v1/models             (in case the gateway lists models)

Every request is appended to PROMPTS (one JSON object a line: the time, the
path and the whole request body, so every message, system prompt included,
is kept), and answered with a fixed short assistant reply, NO_REPLY (what
OpenClaw's heartbeat prompt asks for when nothing needs attention), or the
text given with --reply. Nothing else: no tool calls, so the agent's turn
ends after one model call. When each answer has been sent, its time and
the time of its request go to PROMPTS.answers (one JSON object a line).

--stall MARKER: the first request whose current turn holds MARKER is
recorded but never answered (the model "thinks" until the caller goes away);
later requests holding it are answered as usual.

--tool MARKER: a request whose current turn holds MARKER is answered with a
call of OpenClaw's `message` tool (through its `tool_call` entry point),
action send, text "Sent with the message tool: MARKER"; once the tool's
result is in the request, with NO_REPLY (nothing more to say).

Usage: model.py PORT PROMPTS_FILE [--reply TEXT] [--stall MARKER] [--tool MARKER]
(listens on 127.0.0.1 only)
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_ID = "stand-in"
REPLY = "NO_REPLY"

PROMPTS = None
STALL = None
TOOL = None
STALLED = set()
LOCK = threading.Lock()


def turn_text(body):
    """The text of a chat request's current turn: its user messages after the
    last assistant message (OpenClaw sends the inbound message, then its own
    context, as two user messages)."""
    texts = []
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        if m.get("role") == "assistant":
            texts = []
        elif m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                texts.append(c)
            elif isinstance(c, list):
                texts.extend(p.get("text", "") for p in c if isinstance(p, dict))
    return "\n".join(texts)


def tool_state(body):
    """For --tool: "call" when the newest inbound message (the last user
    message that is not OpenClaw's internal context) holds the marker and no
    tool result follows it, "done" when one does, else None."""
    if not TOOL:
        return None
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.get("role") != "user":
            continue
        c = m.get("content")
        text = c if isinstance(c, str) else "\n".join(
            p.get("text", "") for p in c or [] if isinstance(p, dict))
        if text.lstrip().startswith("<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT"):
            continue
        if TOOL not in text:
            return None
        return "done" if any(n.get("role") == "tool" for n in messages[i + 1:]) else "call"
    return None


def record_answer(request_t):
    line = json.dumps({"t": time.time(), "request_t": request_t})
    with LOCK, open(PROMPTS + ".answers", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def record(path, body):
    t = time.time()
    line = json.dumps({"t": t, "path": path, "body": body})
    with LOCK, open(PROMPTS, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
    return t


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("model: %s %s\n" % (self.address_string(), fmt % args))

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "e2e"}]})
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        request_t = record(self.path, body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self.send_json(404, {"error": {"message": "not found: " + self.path}})
            return
        if STALL and STALL in turn_text(body):
            with LOCK:
                first = STALL not in STALLED
                STALLED.add(STALL)
            if first:
                sys.stderr.write("model: stalling on the marker\n")
                sys.stderr.flush()
                time.sleep(3600)
                return
        created = int(time.time())
        cid = "chatcmpl-e2e-%d" % int(time.time() * 1e6)
        model = body.get("model", MODEL_ID)
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        reply, call = REPLY, None
        state = tool_state(body)
        if state == "done":
            reply = "NO_REPLY"
        elif state == "call":
            reply = None
            call = {"id": "call_e2e_%d" % int(time.time() * 1e6), "type": "function", "function": {
                "name": "tool_call",
                "arguments": json.dumps({"id": "message", "args": {
                    "action": "send", "message": "Sent with the message tool: " + TOOL}})}}
        if body.get("stream"):
            self.send_sse(cid, created, model, usage, reply, call)
            record_answer(request_t)
        else:
            message = {"role": "assistant", "content": reply}
            if call:
                message["tool_calls"] = [call]
            self.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "tool_calls" if call else "stop",
                             "message": message}],
                "usage": usage,
            })
            record_answer(request_t)

    def send_sse(self, cid, created, model, usage, reply, call):
        def chunk(delta, finish=None, **extra):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            obj.update(extra)
            return "data: " + json.dumps(obj) + "\n\n"

        if call:
            body = [chunk({"role": "assistant", "content": None,
                           "tool_calls": [dict(call, index=0)]}),
                    chunk({}, "tool_calls")]
        else:
            body = [chunk({"role": "assistant", "content": ""}), chunk({"content": reply}), chunk({}, "stop")]
        events = body + [
            # the usage chunk stream_options.include_usage asks for
            "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk",
                                   "created": created, "model": model,
                                   "choices": [], "usage": usage}) + "\n\n",
            "data: [DONE]\n\n",
        ]
        data = "".join(events).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    global PROMPTS, REPLY, STALL, TOOL
    args = sys.argv[1:]
    port, PROMPTS = int(args[0]), args[1]
    rest = args[2:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--reply":
            REPLY = value
        elif flag == "--stall":
            STALL = value
        elif flag == "--tool":
            TOOL = value
        else:
            sys.exit("model.py: unknown option " + flag)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    sys.stderr.write("model: listening on 127.0.0.1:%d, recording to %s\n" % (port, PROMPTS))
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
