#!/usr/bin/env python3
"""Looks for the clawbus wake in the prompts the stand-in model recorded.

Usage: check_prompts.py PROMPTS_FILE AGENT SENDER INBOX_URL SECRET SINCE

Prints one JSON object and exits:
  0  found: a chat request recorded after SINCE (unix seconds) holds the wake
     line for AGENT from SENDER, naming INBOX_URL, and its system prompt lists
     the clawbus skill under <available_skills>; no request holds SECRET;
  1  not (yet) found;
  2  a request holds SECRET, the message content: wake lines must never
     carry content, so this fails at once.

OpenClaw hands a wake text to the model inside its internal context block as
a quoted string (`"System: [time] <text>"`), so the quotes around the sender
arrive escaped (`\\"alice\\"`); both spellings are accepted.
"""

import json
import re
import sys


def texts(content):
    """The text of a message's content: a string, or a list of parts."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def main():
    path, agent, sender, inbox_url, secret, since = sys.argv[1:7]
    since = float(since)
    wake_start = 'clawbus: unread messages for %s from "%s"' % (agent, sender)
    inbox = "/api/inbox?agent=%s" % agent
    skill = re.compile(r"<available_skills>.*?<name>clawbus</name>.*?</available_skills>", re.S)

    result = {"requests": 0, "found": False}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if secret in line:
            result.update(leak=True, leak_path=rec.get("path"))
            print(json.dumps(result))
            sys.exit(2)
        if rec["t"] < since or not rec["path"].endswith("/chat/completions"):
            continue
        result["requests"] += 1
        if result["found"]:
            continue
        messages = rec["body"].get("messages", [])
        system = "\n".join(t for m in messages if m.get("role") in ("system", "developer")
                           for t in texts(m.get("content")))
        for m in messages:
            for text in texts(m.get("content")):
                for form, t in (("plain", text), ("escaped", text.replace('\\"', '"'))):
                    i = t.find(wake_start)
                    if i < 0:
                        continue
                    line_end = t.find("\n", i)
                    wake_line = t[i:] if line_end < 0 else t[i:line_end]
                    if inbox not in wake_line:
                        continue
                    result.update(
                        found=True,
                        t=rec["t"],
                        role=m.get("role"),
                        form=form,
                        wake_line=wake_line,
                        names_inbox_url=inbox_url in wake_line,
                        # what surrounds the wake text, as the model sees it
                        context=text[max(0, text.find("clawbus:") - 200):text.find("clawbus:") + 60],
                        skill_listed=bool(skill.search(system)),
                        skill_location=(re.search(
                            r"<name>clawbus</name>.*?<location>(.*?)</location>", system, re.S)
                            or [None, None])[1],
                    )
                    break
                if result["found"]:
                    break
            if result["found"]:
                break
    print(json.dumps(result))
    sys.exit(0 if result["found"] else 1)


if __name__ == "__main__":
    main()
