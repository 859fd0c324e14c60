#!/usr/bin/env python3
"""Waits for a clawbus wake to reach the model, for scripts/e2e-openclaw.sh.

Usage: await_wake.py READY_FILE STATS_URL PROMPTS_FILE AGENT SENDER INBOX_URL SECRET SINCE TIMEOUT PID...

Started before the send, it creates READY_FILE once it polls (so the send
waits for it, and the times measured are not those of starting Python), then
polls every 10 ms two things until both happened or TIMEOUT seconds passed:

- STATS_URL (the recipient's adapter, /api/stats) until `wakes.sent` >= 1,
  that is, the gateway answered a wake 200;
- PROMPTS_FILE (what the stand-in model recorded: one JSON request a line)
  until a chat request recorded after SINCE (unix seconds) holds the wake line
  for AGENT from SENDER naming /api/inbox?agent=AGENT.

Prints one JSON object: wake_t (when the counter was seen), prompt_t (when the
model received the prompt), the wake line as the model saw it, whether the
clawbus skill is listed under <available_skills> in that prompt's system
message, and `leak` if any recorded request holds SECRET (the message content,
which wake lines never carry). Exit status 0 when both were seen and nothing
leaked, 1 otherwise (with `error` saying why). It gives up early when one of
the PIDs (the processes under test) has exited.

OpenClaw hands a wake text to the model inside its internal context block, as
a JSON-quoted string ("System: [time] <text>"), so quotes in the text arrive
escaped; the line is decoded from that string.
"""

import json
import re
import sys
import time
import urllib.request

from prompts import exited, new_lines, texts

SKILL = re.compile(r"<available_skills>.*?<name>clawbus</name>.*?</available_skills>", re.S)
SKILL_LOCATION = re.compile(r"<name>clawbus</name>.*?<location>(.*?)</location>", re.S)


def wake_line_in(text, start, inbox):
    """The wake line in TEXT, decoded if it sits in a JSON-quoted string, and
    how it was found; or None."""
    escaped = start.replace('"', '\\"')
    i = text.find(escaped)
    if i >= 0:
        # decode the quoted string the line sits in
        q = text.rfind('"', 0, i)
        try:
            decoded, _ = json.JSONDecoder().raw_decode(text, q)
            line = decoded[decoded.find(start):].split("\n", 1)[0]
            form = "inside a JSON-quoted string"
        except (ValueError, IndexError):
            line = text[i:].split("\n", 1)[0].replace('\\"', '"')
            form = "with escaped quotes"
    else:
        i = text.find(start)
        if i < 0:
            return None
        line = text[i:].split("\n", 1)[0]
        form = "verbatim"
    if inbox not in line:
        return None
    return line, form, text[max(0, i - 160):i]


def scan_prompts(path, offset, state, a):
    """Reads the requests appended since OFFSET; returns the new offset."""
    lines, offset = new_lines(path, offset)
    for raw in lines:
        rec = json.loads(raw)
        if a["secret"] in raw.decode("utf-8", "replace"):
            state["leak"] = rec.get("path")
        if rec["t"] < a["since"] or not rec["path"].endswith("/chat/completions"):
            continue
        state["model_calls"] += 1
        if "prompt_t" in state:
            continue
        messages = rec["body"].get("messages", [])
        system = "\n".join(t for m in messages if m.get("role") in ("system", "developer")
                           for t in texts(m.get("content")))
        for m in messages:
            for text in texts(m.get("content")):
                found = wake_line_in(text, a["start"], a["inbox"])
                if found and "prompt_t" not in state:
                    line, form, before = found
                    location = SKILL_LOCATION.search(system)
                    state.update(
                        prompt_t=rec["t"],
                        role=m.get("role"),
                        form=form,
                        wake_line=line,
                        before=before,
                        names_inbox_url=a["inbox_url"] in line,
                        skill_listed=bool(SKILL.search(system)),
                        skill_location=location.group(1) if location else None,
                    )
    return offset


def wakes_sent(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            stats = json.load(r)
        return stats["wakes"]["sent"], stats["wakes"]
    except (OSError, ValueError, KeyError):
        return 0, None


def main():
    ready, stats_url, prompts, agent, sender, inbox_url, secret, since, timeout = sys.argv[1:10]
    pids = [int(p) for p in sys.argv[10:]]
    a = {
        "start": 'clawbus: unread messages for %s from "%s"' % (agent, sender),
        "inbox": "/api/inbox?agent=%s" % agent,
        "inbox_url": inbox_url,
        "secret": secret,
        "since": float(since),
    }
    state = {"model_calls": 0}
    deadline = time.time() + float(timeout)
    offset = 0
    if wakes_sent(stats_url)[0] != 0:
        print(json.dumps({"error": "host B counted wakes before the send"}))
        sys.exit(1)
    open(ready, "w").close()
    while True:
        if "wake_t" not in state:
            sent, _ = wakes_sent(stats_url)
            if sent >= 1:
                state["wake_t"] = time.time()
        offset = scan_prompts(prompts, offset, state, a)
        if "leak" in state:
            state["error"] = "the message content reached the model (%s)" % state["leak"]
            break
        if "wake_t" in state and "prompt_t" in state:
            break
        if time.time() > deadline:
            state["error"] = ("no wake answered by the gateway" if "wake_t" not in state
                              else "no prompt held the wake line") + " within %ss" % timeout
            break
        gone = exited(pids)
        if gone:
            state["error"] = gone
            break
        time.sleep(0.01)
    # the counters as they stand now (the gateway may have been woken again)
    state["wakes"] = wakes_sent(stats_url)[1]
    print(json.dumps(state))
    sys.exit(1 if "error" in state else 0)


if __name__ == "__main__":
    main()
