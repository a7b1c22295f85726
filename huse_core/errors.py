"""Any error as one line naming the file, the problem and what to do: what the command line and the app show."""

from __future__ import annotations

import errno
import json
import sqlite3

_OS_FIX = {
    errno.ENOSPC: "the disk is full: free some space, then run it again",
    errno.EDQUOT: "the disk quota is used up: free some space, then run it again",
    errno.EFBIG: "the file outgrew the size limit for files here (a full disk or a ulimit): free space or raise "
                 "the limit, then run it again",
    errno.EACCES: "check the permissions of the file and its folder (or use a folder you can write to)",
    errno.EPERM: "check the permissions of the file and its folder (or use a folder you can write to)",
    errno.EROFS: "the file system is read-only: use a folder you can write to",
    errno.ENAMETOOLONG: "the name is too long for the file system: use a shorter name",
    errno.ENOENT: "check the path",
    errno.EISDIR: "it is a folder: give a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
}


def one_line(err: BaseException) -> str:
    """`err` as one line. Our own errors already say what to do; system errors (OSError) get the file they concern
    and the fix for their kind; SQLite and JSON errors that reach here say what failed; anything else names its
    type, so nothing reaches the user as a traceback."""
    if isinstance(err, OSError) and err.errno is not None:
        where = err.filename if err.filename is not None else "a file"
        what = err.strerror or str(err)
        text = f"{where}: {what} — {_OS_FIX.get(err.errno, 'check the file and the disk, then run it again')}"
    elif isinstance(err, json.JSONDecodeError):
        text = f"a JSON file is damaged ({err}): restore it or make it again"
    elif isinstance(err, sqlite3.Error):
        text = f"database error ({err}): run it again; if it persists, move the run's index/delta/added.sqlite away"
    elif isinstance(err, (ValueError, RuntimeError, OSError)) and str(err).strip():
        text = str(err)
    else:
        text = (f"unexpected {type(err).__name__}: {err} — a damaged file or a bug; set HUSE_DEBUG=1 to see "
                "where it happened")
    return " ".join(text.split()) or type(err).__name__
