"""Download one URL with urllib the way a script would, through the proxy
that http_proxy names, and resume it.

usage: urlget.py URL OUT SPLIT

It fetches the whole URL into OUT.whole; then bytes 0..SPLIT-1 into OUT,
and resumes OUT from its size with an open-ended Range. It prints one JSON
object: the proxies urllib found in the environment, and for each request
its status, Content-Range, ETag and the number of bytes received.
"""

import json
import os
import shutil
import sys
import urllib.request


def fetch(url, path, mode, first=None, last=None):
    req = urllib.request.Request(url, headers={"User-Agent": "tbproxy-test-urllib"})
    if first is not None:
        spec = "bytes=%d-" % first
        if last is not None:
            spec += str(last)
        req.add_header("Range", spec)
    with urllib.request.urlopen(req, timeout=120) as resp, open(path, mode) as out:
        before = out.tell()
        shutil.copyfileobj(resp, out, 1 << 20)
        return {
            "status": resp.status,
            "content_range": resp.headers.get("Content-Range", ""),
            "etag": resp.headers.get("ETag", ""),
            "received": out.tell() - before,
        }


def main():
    url, out, split = sys.argv[1], sys.argv[2], int(sys.argv[3])
    results = [fetch(url, out + ".whole", "wb")]
    results.append(fetch(url, out, "wb", 0, split - 1))
    results.append(fetch(url, out, "ab", os.path.getsize(out)))
    json.dump({"proxies": urllib.request.getproxies(), "requests": results}, sys.stdout)


if __name__ == "__main__":
    main()
