"""What the end-to-end checks share: reading the stand-in model's log of the
requests OpenClaw sent it (one JSON object per line, appended as they come),
and watching the processes under test."""

import os


def texts(content):
    """The text of a message's content: a string, or a list of parts."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def new_lines(path, offset):
    """The whole lines appended to PATH since OFFSET (bytes), and the offset
    after them; a line still being written is left for the next call."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), offset + end


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def exited(pids):
    """Why a watch must stop because a process it depends on is gone, or None."""
    dead = [p for p in pids if not alive(p)]
    return "process %s exited" % dead if dead else None
