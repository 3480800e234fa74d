#!/usr/bin/env python3
"""Push gen.py's data set (DIR/push-*.json) into a running Loki-compatible server.

Usage: load.py --dir DIR [--url http://127.0.0.1:3100] [--tenant fake] [--workers 4]

Each body is POSTed to /loki/api/v1/push by a pool of concurrent workers; a 429 (rate limited)
or 5xx answer is retried with backoff, any other error stops the load. Prints lines/s at the end.
Python 3 standard library only.
"""
import argparse
import concurrent.futures
import json
import os
import sys
import time
import urllib.error
import urllib.request


def push(url, tenant, path):
    with open(path, "rb") as f:
        body = f.read()
    delay = 0.25
    for _ in range(40):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "X-Scope-OrgID": tenant})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                if r.status in (200, 204):
                    return
                raise RuntimeError("%s: HTTP %d" % (path, r.status))
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")[:300]
            if e.code != 429 and e.code < 500:
                raise RuntimeError("%s: HTTP %d: %s" % (path, e.code, text))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    raise RuntimeError("%s: still refused after 40 tries" % path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="the directory gen.py wrote")
    ap.add_argument("--url", default="http://127.0.0.1:3100")
    ap.add_argument("--tenant", default="fake", help="X-Scope-OrgID (ignored by a server with auth disabled)")
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    files = sorted(os.path.join(a.dir, f) for f in os.listdir(a.dir) if f.startswith("push-") and f.endswith(".json"))
    if not files:
        sys.exit("no push-*.json in %s: run gen.py --out %s first" % (a.dir, a.dir))
    lines = None
    try:
        with open(os.path.join(a.dir, "truth.json"), encoding="utf-8") as f:
            lines = json.load(f)["lines"]
    except (OSError, ValueError, KeyError):
        pass
    url = a.url.rstrip("/") + "/loki/api/v1/push"
    t = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.workers) as pool:
        for fut in concurrent.futures.as_completed([pool.submit(push, url, a.tenant, f) for f in files]):
            try:
                fut.result()
            except RuntimeError as e:
                pool.shutdown(wait=False, cancel_futures=True)
                sys.exit("push failed: %s" % e)
    dt = time.time() - t
    msg = "pushed %d bodies in %.1f s" % (len(files), dt)
    if lines:
        msg += " (%d lines, %.0f lines/s)" % (lines, lines / dt)
    print(msg)


if __name__ == "__main__":
    main()
