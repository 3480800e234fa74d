#!/usr/bin/env python3
"""Run every query of the forensics playbook (queries.json) against a Loki-compatible server that
holds gen.py's data set and compare each answer with the ground truth (truth.json).

Usage: check.py --url http://127.0.0.1:3100 --data DIR [--tenant fake] [--only s1.who,...]
       check.py --data DIR --emit      # print the resolved HTTP requests as JSON (for the bench)

Exit status 0 when every answer matches, 1 otherwise. Python 3 standard library only.
"""
import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def lookup(truth, path):
    cur = truth
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise KeyError("truth.json has no %s" % path)
    return cur


def resolve(value, truth):
    """${var} from truth.vars inside strings; "$a.b" is the truth value at a.b."""
    if isinstance(value, str):
        if value.startswith("$") and not value.startswith("${"):
            return lookup(truth, value[1:])
        return VAR.sub(lambda m: str(lookup(truth, "vars." + m.group(1))), value)
    if isinstance(value, list):
        return [resolve(v, truth) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, truth) for k, v in value.items()}
    return value


def requests(spec, truth):
    """(id, path, params, expect, limit) of every query, resolved."""
    out = []
    for q in spec["queries"]:
        params = {"query": resolve(q["query"], truth)}
        if "range" in q:
            start, end = truth["ranges"][q["range"]]
            params.update({"start": str(start), "end": str(end)})
            path = "/loki/api/v1/query_range"
            if "step_s" in q:
                params["step"] = str(q["step_s"])
            if "limit" in q:
                params["limit"] = str(q["limit"])
        else:
            path = "/loki/api/v1/query"
            params["time"] = str(truth["instants"][q["time"]])
        out.append({"id": q["id"], "title": q["title"], "path": path, "params": params,
                    "expect": resolve(q["expect"], truth), "limit": q.get("limit")})
    return out


def get(url, path, params, tenant):
    req = urllib.request.Request(url.rstrip("/") + path + "?" + urllib.parse.urlencode(params),
                                 headers={"X-Scope-OrgID": tenant})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def parse_line(line):
    """Fields of a JSON (flat) or logfmt line, as strings."""
    if line.startswith("{"):
        try:
            rec = json.loads(line)
        except ValueError:
            return {}
        return {k: (json.dumps(v) if isinstance(v, (dict, list)) else
                    ("true" if v is True else "false" if v is False else str(v))) for k, v in rec.items()}
    return {m.group(1): m.group(3) if m.group(3) is not None else m.group(2)
            for m in re.finditer(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))', line)}


def entries(body):
    """(ts_ns, fields) of every entry of a streams answer: stream labels over the line's fields."""
    out = []
    for s in body["data"]["result"]:
        for v in s["values"]:
            fields = parse_line(v[1])
            fields.update(s["stream"])
            if len(v) > 2 and isinstance(v[2], dict):
                fields.update(v[2].get("structuredMetadata", {}))
            out.append((int(v[0]), fields, s["stream"]))
    return out


def matches(fields, where):
    return all(fields.get(k) == str(v) for k, v in where.items())


def check(req, status, text, truth):
    """The list of mismatches (empty when the answer is right)."""
    exp = req["expect"]
    bad = []
    want_status = exp.get("status", 200)
    if status != want_status:
        return ["status %d, want %d: %s" % (status, want_status, text[:300])]
    if want_status != 200:
        if exp.get("error_contains", "") not in text:
            bad.append("error %r lacks %r" % (text[:300], exp["error_contains"]))
        return bad
    body = json.loads(text)
    rtype = body["data"]["resultType"]
    if rtype == "streams":
        ents = entries(body)
        if "entries" in exp:
            want = exp["entries"] if req["limit"] is None else min(exp["entries"], req["limit"])
            if len(ents) != want:
                bad.append("%d entries, want %d" % (len(ents), want))
        for fs in exp.get("field_set", []):
            got = sorted({f.get(fs["field"]) for _, f, _ in ents if fs["field"] in f})
            want = sorted({str(x) for x in fs["equals"]})
            if got != want:
                bad.append("%s values %s, want %s" % (fs["field"], short(got), short(want)))
        if "span_of" in exp:
            so = exp["span_of"]
            ts = [t for t, f, _ in ents if matches(f, so["where"])]
            if not ts or min(ts) != so["first"] or max(ts) != so["last"]:
                bad.append("entries where %s span %s, want [%s, %s]" % (
                    so["where"], [min(ts), max(ts)] if ts else "nothing", so["first"], so["last"]))
        if "jobs" in exp:
            got = {}
            for _, _, stream in ents:
                got[stream.get("job")] = got.get(stream.get("job"), 0) + 1
            if got != exp["jobs"]:
                bad.append("lines per job %s, want %s" % (got, exp["jobs"]))
        if "all_within" in exp:
            lo, hi = truth["ranges"][exp["all_within"]["range"]]
            hi += exp["all_within"]["slack_s"] * 10**9
            out = [t for t, _, _ in ents if not lo <= t <= hi]
            if out:
                bad.append("%d entries outside [%d, %d]" % (len(out), lo, hi))
        if "contains_count" in exp:
            cc = exp["contains_count"]
            n = sum(1 for s in body["data"]["result"] for v in s["values"] if cc["substring"] in v[1])
            if n != cc["equals"]:
                bad.append("%d lines contain %r, want %d" % (n, cc["substring"], cc["equals"]))
        return bad
    series = body["data"]["result"]
    if "top_series" in exp:
        ts = exp["top_series"]
        best, others = None, 0.0
        for s in series:
            mx = max(float(p[1]) for p in s["values"])
            if matches(s["metric"], ts["labels"]):
                best = mx
            else:
                others = max(others, mx)
        if best != ts["max"]:
            bad.append("max of %s is %s, want %s" % (ts["labels"], best, ts["max"]))
        if others > ts["others_max_le"]:
            bad.append("another series reaches %s (> %s)" % (others, ts["others_max_le"]))
    if "series_value" in exp:
        for sv in exp["series_value"]:
            got = [float(s["value"][1]) for s in series if matches(s["metric"], sv["labels"])]
            if got != [float(sv["value"])]:
                bad.append("%s = %s, want %s" % (sv["labels"], got, sv["value"]))
    if "series_exact" in exp:
        got = sorted(json.dumps(s["metric"], sort_keys=True) for s in series)
        want = sorted(json.dumps({k: str(v) for k, v in m.items()}, sort_keys=True) for m in exp["series_exact"])
        if got != want:
            bad.append("series %s, want %s" % (got, want))
    if "above_only" in exp:
        ab = exp["above_only"]
        lo, hi = truth["ranges"][ab["range"]]
        hi += ab["slack_s"] * 10**9
        hit = False
        for s in series:
            for t, v in s["values"]:
                if float(v) <= ab["threshold"]:
                    continue
                t_ns = int(round(float(t) * 1e9))
                if not matches(s["metric"], ab["labels"]) or not lo < t_ns <= hi:
                    bad.append("%s above %s at %s" % (s["metric"], ab["threshold"], t))
                    break
                hit = True
        if not hit:
            bad.append("%s never above %s" % (ab["labels"], ab["threshold"]))
    return bad


def short(xs):
    return xs if len(xs) <= 4 else "%s... (%d)" % (xs[:3], len(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:3100")
    ap.add_argument("--data", required=True, help="the directory gen.py wrote (truth.json)")
    ap.add_argument("--queries", default=os.path.join(HERE, "queries.json"))
    ap.add_argument("--tenant", default="fake", help="X-Scope-OrgID (ignored by a server with auth disabled)")
    ap.add_argument("--only", help="comma-separated query ids")
    ap.add_argument("--emit", action="store_true", help="print the resolved requests as JSON and exit")
    a = ap.parse_args()
    with open(os.path.join(a.data, "truth.json"), encoding="utf-8") as f:
        truth = json.load(f)
    with open(a.queries, encoding="utf-8") as f:
        spec = json.load(f)
    reqs = requests(spec, truth)
    if a.only:
        keep = set(a.only.split(","))
        reqs = [r for r in reqs if r["id"] in keep]
    if a.emit:
        json.dump(reqs, sys.stdout, indent=1)
        print()
        return 0
    wrong = 0
    for r in reqs:
        status, text = get(a.url, r["path"], r["params"], a.tenant)
        try:
            bad = check(r, status, text, truth)
        except (ValueError, KeyError, TypeError) as e:
            bad = ["unexpected answer (%s: %s): %s" % (type(e).__name__, e, text[:200])]
        wrong += bool(bad)
        print("%-22s %-5s %s%s" % (r["id"], "ok" if not bad else "WRONG", r["title"],
                                   "".join("\n    - " + b for b in bad)))
    print("%d of %d playbook queries answered right" % (len(reqs) - wrong, len(reqs)))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
