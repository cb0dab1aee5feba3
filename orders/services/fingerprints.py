"""What makes two failures "the same": the fingerprint of a FailureGroup.

The task, the exception type and where it was raised: the innermost frame of the
project's own code, as the traceback text names it. Not the message, which often
carries ids ("stock for ord_… is negative"), and not the line number, which an
unrelated edit above it would change. Frames inside libraries (Django, django-q2,
anything in site-packages, the standard library) are skipped: a failure deep in
the ORM belongs where the project called it.

It works on the traceback's text, not a live exception, because that is all there
is for a task that failed in another process (django-q2 hands the monitor text)
and for the records stored before groups existed (migration 0008).
"""

import hashlib
import re
import sysconfig
from pathlib import PurePath

from django.conf import settings

# '  File "/srv/app/orders/services/orders.py", line 642, in order_delivery_completed'
FRAME_LINE = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+, in (?P<function>.+)$')
LIBRARY_DIRS = ("site-packages", "dist-packages")


def traceback_frames(traceback_text: str) -> list[tuple[str, str]]:
    """(path, function) of every frame in the text, outermost first. Of a chained
    traceback ("During handling of the above exception…") the last one counts:
    it is the exception that escaped."""
    frames: list[tuple[str, str]] = []
    for line in traceback_text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            frames = []
            continue
        match = FRAME_LINE.match(line)
        if match:
            frames.append((match["path"], match["function"].strip()))
    return frames


def is_project_path(path: str) -> bool:
    """Whether a frame's file is the project's own code, not a library's."""
    if path.startswith("<"):  # <frozen runpy>, <string>
        return False
    parts = PurePath(path).parts
    if any(part in LIBRARY_DIRS for part in parts):
        return False
    stdlib = sysconfig.get_paths()["stdlib"]
    return not path.startswith(stdlib + "/")


def project_relative(path: str) -> str:
    """The path from the project's directory, so the same code checked out
    elsewhere (another deploy, another machine) gives the same location."""
    try:
        return PurePath(path).relative_to(settings.BASE_DIR).as_posix()
    except ValueError:
        return path


def failure_location(traceback_text: str) -> str:
    """ "orders/services/orders.py in order_place": the innermost project frame; the
    innermost frame of all when no frame is the project's (a library's task);
    "" when the text has no frames."""
    frames = traceback_frames(traceback_text)
    own = [frame for frame in frames if is_project_path(frame[0])]
    chosen = (own or frames)[-1:] or None
    if chosen is None:
        return ""
    path, function = chosen[0]
    return f"{project_relative(path)} in {function}"


def failure_fingerprint(*, task: str, exception_type: str, location: str) -> str:
    key = "\n".join([task, exception_type, location])
    return hashlib.sha256(key.encode()).hexdigest()
