#!/usr/bin/python3
"""Describe a .torrent file as JSON, as seen by libtorrent.

Usage: /usr/bin/python3 ltinfo.py FILE.torrent

Prints a single JSON object to stdout with the fields
info_hash, name, piece_length, num_pieces, total_length, private,
files [{path, length}], trackers [[url, ...], ...], web_seeds [url, ...]
and comment.

For a multi-file torrent each file path is joined with "/" and is
relative to the torrent's root directory (the torrent name is not
included). For a single-file torrent the only path is the name.
Padding files (BEP 47) are left out.

Needs the Debian python3-libtorrent bindings, which are only importable
from the system interpreter (/usr/bin/python3). Works with both the
1.x and 2.x binding APIs.
"""

import json
import os
import sys


def fail(msg, code=1):
    sys.stderr.write("ltinfo: %s\n" % msg)
    sys.exit(code)


try:
    import libtorrent as lt
except ImportError as exc:  # pragma: no cover - environment problem
    fail("cannot import libtorrent (%s); run with /usr/bin/python3 "
         "and install python3-libtorrent" % exc, 3)


def to_str(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def load(path):
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        fail("cannot read %s: %s" % (path, exc), 2)
    errors = []
    # Newer bindings accept the raw buffer or a path; older ones want a
    # decoded entry. Try the options in turn.
    attempts = (
        lambda: lt.torrent_info(path),
        lambda: lt.torrent_info(lt.bdecode(data)),
    )
    for attempt in attempts:
        try:
            ti = attempt()
        except Exception as exc:  # RuntimeError, TypeError, ...
            errors.append(str(exc))
            continue
        if ti is not None and (not hasattr(ti, "is_valid") or ti.is_valid()):
            return ti, data
        errors.append("torrent_info is not valid")
    fail("failed to load torrent %s: %s" % (path, "; ".join(errors)), 2)


def info_hash_hex(ti):
    if hasattr(ti, "info_hashes"):
        hashes = ti.info_hashes()
        has_v1 = getattr(hashes, "has_v1", None)
        if has_v1 is not None and not has_v1():
            fail("torrent has no v1 (SHA-1) info-hash", 2)
        return str(hashes.v1).lower()
    return str(ti.info_hash()).lower()


def file_storage(ti):
    # orig_files() is the file list as it appears in the .torrent, before
    # any renames; it was removed from newer bindings where files()
    # serves the same purpose for a freshly loaded torrent.
    if hasattr(ti, "orig_files"):
        try:
            return ti.orig_files()
        except Exception:
            pass
    return ti.files()


def info_dict(ti):
    """Return the decoded info dictionary, or None if not available."""
    for getter in ("info_section", "metadata"):
        fn = getattr(ti, getter, None)
        if fn is None:
            continue
        try:
            raw = fn()
            if isinstance(raw, str):
                raw = raw.encode("latin-1")
            decoded = lt.bdecode(bytes(raw))
        except Exception:
            continue
        if isinstance(decoded, dict):
            return decoded
    return None


def is_multi_file(ti, fs):
    info = info_dict(ti)
    if info is not None:
        return b"files" in info or "files" in info
    # Fallback heuristic: a single-file torrent has exactly one file
    # whose path is just the name.
    if fs.num_files() != 1:
        return True
    return to_str(fs.file_path(0)).replace(os.sep, "/") != to_str(ti.name())


def pad_flag():
    for holder in (getattr(lt, "file_storage", None), getattr(lt, "file_flags_t", None)):
        if holder is not None and hasattr(holder, "flag_pad_file"):
            return int(holder.flag_pad_file)
    return 1


def is_pad(fs, index, flag):
    if hasattr(fs, "file_flags"):
        try:
            return bool(int(fs.file_flags(index)) & flag)
        except Exception:
            pass
    if hasattr(fs, "pad_file_at"):
        return bool(fs.pad_file_at(index))
    return False


def files_of(ti):
    fs = file_storage(ti)
    multi = is_multi_file(ti, fs)
    flag = pad_flag()
    out = []
    for i in range(fs.num_files()):
        if is_pad(fs, i, flag):
            continue
        path = to_str(fs.file_path(i)).replace(os.sep, "/")
        if multi:
            # Drop the leading root directory (the torrent name).
            parts = path.split("/", 1)
            path = parts[1] if len(parts) == 2 else parts[0]
        out.append({"path": path, "length": int(fs.file_size(i))})
    return out


def raw_tracker_order(raw):
    """Map each announce URL to its position in the .torrent file."""
    top = None
    try:
        top = lt.bdecode(raw)
    except Exception:
        pass
    if not isinstance(top, dict):
        return {}

    def get(key):
        value = top.get(key.encode())
        return value if value is not None else top.get(key)

    urls = []
    announce_list = get("announce-list")
    if isinstance(announce_list, list):
        for tier in announce_list:
            if isinstance(tier, list):
                urls.extend(tier)
    announce = get("announce")
    if announce is not None:
        urls.append(announce)
    pos = {}
    for i, url in enumerate(urls):
        pos.setdefault(to_str(url), i)
    return pos


def trackers_of(ti, raw):
    # libtorrent decides which trackers and tiers exist, but it shuffles
    # the URLs within a tier when loading (BEP 12), so restore the order
    # in which the file lists them.
    pos = raw_tracker_order(raw)
    tiers = {}
    for entry in ti.trackers():
        tiers.setdefault(int(entry.tier), []).append(to_str(entry.url))
    out = []
    for tier in sorted(tiers):
        urls = tiers[tier]
        out.append(sorted(urls, key=lambda u: (pos.get(u, len(pos)), urls.index(u))))
    return out


def web_seeds_of(ti):
    seeds = []
    for ws in ti.web_seeds():
        if isinstance(ws, dict):
            kind = ws.get("type", 0)
            url = ws.get("url")
        else:
            kind = getattr(ws, "type", 0)
            url = getattr(ws, "url", ws)
        # type 0 is a BEP 19 url seed ("url-list"); type 1 is a BEP 17
        # http seed ("httpseeds"), which is not part of this report.
        try:
            if int(kind) != 0:
                continue
        except (TypeError, ValueError):
            if "http_seed" in str(kind):
                continue
        seeds.append(to_str(url))
    return seeds


def describe(ti, raw):
    return {
        "info_hash": info_hash_hex(ti),
        "name": to_str(ti.name()),
        "piece_length": int(ti.piece_length()),
        "num_pieces": int(ti.num_pieces()),
        "total_length": int(ti.total_size()),
        "private": bool(ti.priv()),
        "files": files_of(ti),
        "trackers": trackers_of(ti, raw),
        "web_seeds": web_seeds_of(ti),
        "comment": to_str(ti.comment()),
    }


def main(argv):
    if len(argv) != 2:
        fail("usage: %s FILE.torrent" % os.path.basename(argv[0]), 64)
    ti, raw = load(argv[1])
    try:
        result = describe(ti, raw)
    except SystemExit:
        raise
    except Exception as exc:
        fail("failed to inspect %s: %s" % (argv[1], exc), 2)
    text = json.dumps(result, ensure_ascii=False, indent=2)
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape") + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
