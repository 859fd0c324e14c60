#!/usr/bin/env python3
"""Follows one message through the clawbus channel plugin, for
scripts/e2e-openclaw.sh.

Usage: await_channel.py READY PROMPTS SECRET SINCE ALICE_INBOX BOB_MESSAGES REPLY TIMEOUT [--no-reply] PID...

Started before the send, it creates READY once it polls, then polls every
10 ms until all of these happened, or TIMEOUT seconds passed:

- prompt: a chat request recorded by the stand-in model (PROMPTS) after
  SINCE (unix seconds) whose current turn (the user messages after the last
  assistant message) holds SECRET (the message content): the message is in
  the agent's prompt;
- answered: the model sent its answer to that request (PROMPTS.answers);
- inbox: ALICE_INBOX (alice's unread inbox on her host) holds a new message
  (not there at the start) from bob whose content is REPLY: the reply
  reached the sender;
- acked: in BOB_MESSAGES (bob's inbox on his host, read ones included) the
  message holding SECRET is read: the plugin acknowledged it.

With --no-reply only the prompt is awaited (the model stalls on it).

Prints one JSON object with the times and what was seen; exit status 0 when
all were seen, 1 otherwise (with `error`). It gives up early when one of the
PIDs has exited.
"""

import json
import sys
import time
import urllib.request

from prompts import exited, new_lines, texts


def turn(messages):
    """The user messages of the current turn: those after the last assistant
    message (OpenClaw sends the inbound message, then its own context, as
    two user messages)."""
    users = []
    for m in messages:
        if m.get("role") == "assistant":
            users = []
        elif m.get("role") == "user":
            users.append(m)
    return users


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def main():
    args = sys.argv[1:]
    ready, prompts, secret, since, alice_inbox, bob_messages, reply, timeout = args[:8]
    rest = args[8:]
    want_reply = True
    if rest and rest[0] == "--no-reply":
        want_reply, rest = False, rest[1:]
    pids = [int(p) for p in rest]
    since, deadline = float(since), time.time() + float(timeout)
    state = {}
    offsets = {"prompts": 0, "answers": 0}
    # replies already in alice's inbox answer earlier messages
    earlier = {m.get("id") for m in (get_json(alice_inbox) or {}).get("messages", [])}
    open(ready, "w").close()
    while True:
        lines, offsets["prompts"] = new_lines(prompts, offsets["prompts"])
        records = [json.loads(raw) for raw in lines]
        for rec in records:
            if "prompt_t" in state or rec["t"] < since or not rec["path"].endswith("/chat/completions"):
                continue
            messages = rec["body"].get("messages", [])
            user = next((m for m in turn(messages) if secret in "\n".join(texts(m.get("content")))), None)
            if user is None:
                continue
            text = "\n".join(texts(user.get("content")))
            everything = "\n".join(t for m in messages for t in texts(m.get("content")))
            i = text.find(secret)
            state.update(
                prompt_t=rec["t"],
                role=user.get("role"),
                excerpt=text[max(0, i - 400):i + len(secret) + 40],
                wake_line="clawbus: unread messages" in everything,
                in_prompt=everything.count(secret),
            )
        lines, offsets["answers"] = new_lines(prompts + ".answers", offsets["answers"])
        answers = [json.loads(raw) for raw in lines]
        for rec in answers:
            if "prompt_t" in state and rec["request_t"] == state["prompt_t"]:
                state["answered_t"] = rec["t"]
        if want_reply and "inbox_t" not in state:
            inbox = get_json(alice_inbox)
            for m in (inbox or {}).get("messages", []):
                if m.get("from") == "bob" and m.get("content") == reply and m.get("id") not in earlier:
                    state.update(inbox_t=time.time(), reply=m)
                    break
        if want_reply and "acked_t" not in state:
            listing = get_json(bob_messages)
            for m in (listing or {}).get("messages", []):
                if secret in m.get("content", ""):
                    state["message"] = m
                    if m.get("read"):
                        state["acked_t"] = time.time()
        done = all(k in state for k in (["prompt_t", "answered_t", "inbox_t", "acked_t"] if want_reply else ["prompt_t"]))
        if done:
            break
        if time.time() > deadline:
            missing = [k for k in ("prompt_t", "answered_t", "inbox_t", "acked_t") if k not in state]
            state["error"] = "not seen within %ss: %s" % (timeout, ", ".join(missing))
            break
        gone = exited(pids)
        if gone:
            state["error"] = gone
            break
        time.sleep(0.01)
    print(json.dumps(state))
    sys.exit(1 if "error" in state else 0)


if __name__ == "__main__":
    main()
