#!/usr/bin/env python3
"""The forensics playbook's incident data set (docs/forensics.md), as Loki JSON push bodies.

The platform of the playbook (a game site: Flask backend, React front end, nginx, PostgreSQL)
over a span of time (default: the 24 hours ending at --end), with three incidents planted:

  1. the hacked account: brute-force failed logins (HTTP 401) on an admin account from attacker
     IPs, one success from a new IP, then a permission change and an export;
  2. the wipe: the same account then DELETEs games at one request per second for 4 minutes; each
     request is one chain nginx -> backend route line -> database audit rows -> backend audit row
     sharing a correlation_id (nginx logs it as req_id=, the database as correlation_id=), the
     backend lines carry a trace_id as structured metadata;
  3. the slow API: for 15 minutes /api/leaderboard takes 1.2-6 s (nginx answers most with 504)
     and the database audit rows of those requests take over 500 ms.

Normal traffic never reaches the incidents' signatures (backend duration_ms <= 900, database
duration < 500ms, the admin account is quiet in the last two hours), so every count in the ground
truth is exact, and is counted from the lines written, not assumed.

Output (DIR = --out):
  DIR/push-NNNNNN.json   Loki JSON push bodies of about --batch-bytes each, in time order
  DIR/truth.json         ground truth: culprit, IPs, windows, request chains, per-query counts
                         (scripts/playbook/queries.json refers to it; check.py compares)

Usage: gen.py --out DIR [--lines 1000000] [--end 2026-11-21T00:00:00Z] [--hours 24] [--seed 25]
Python 3 standard library only; about 150k lines/s on one core.
"""
import argparse
import bisect
import datetime
import json
import math
import os
import random
import sys
import time

MIN = 60 * 10**9
SEC = 10**9
MS = 10**6

# ------------------------------------------------------------------ streams (labels)
BACKEND = [{"job": "tovplay-backend", "env": "prod", "host": "app-%02d" % i} for i in range(1, 5)]
FRONTEND = [{"job": "tovplay-frontend", "env": "prod", "host": "web-%02d" % i} for i in range(1, 3)]
NGINX = [{"job": "nginx", "env": "prod", "host": "edge-%02d" % i} for i in range(1, 3)]
POSTGRES = [{"job": "postgres", "env": "prod", "host": "db-01", "db": "TovPlay"}]
STREAMS = BACKEND + FRONTEND + NGINX + POSTGRES
S_BACKEND = list(range(0, 4))
S_FRONTEND = [4, 5]
S_NGINX = [6, 7]
S_PG = 8
JOB = [s["job"] for s in STREAMS]

# Share of the normal lines per source (the incidents add their own).
SOURCES = [("backend", 0.45), ("nginx", 0.30), ("postgres", 0.12), ("frontend", 0.13)]

FIRST = ["noa", "yael", "omer", "itai", "maya", "lior", "tamar", "eitan", "shira", "amit", "roni", "gal",
         "dana", "yoni", "talia", "ariel", "nadav", "michal", "ido", "hila", "adam", "sara", "ben", "lea"]
LAST = ["cohen", "levi", "mizrahi", "peretz", "biton", "dahan", "avraham", "friedman", "katz", "azoulay",
        "smith", "garcia", "muller", "rossi", "novak", "kim", "silva", "ito"]
N_USERS = 2000
ADMINS = 5                      # user ids 1..5 have the admin role
VICTIM_INDEX = 2                # users[2]: the admin account that gets hacked
ATTACKER_IP = "203.0.113.77"
ATTACKER_HELPERS = ["198.51.100.23", "198.51.100.41"]
SLOW_PATH = "/api/leaderboard"

# action, weight, method, audited (an audit decorator row and database rows follow)
ACTIONS = [("READ", 55, "GET", False), ("CREATE", 8, "POST", True), ("UPDATE", 14, "PUT", True),
           ("DELETE", 1.5, "DELETE", True), ("LOGIN", 6, "POST", True), ("LOGOUT", 3, "POST", True),
           ("EXPORT", 0.3, "GET", True), ("PERMISSION_CHANGE", 0.2, "PATCH", True)]
RESOURCES = [("Game", "games", "game"), ("User", "users", "users"), ("Tournament", "tournaments", "tournament"),
             ("Score", "scores", "score")]
ERRORS = [("psycopg2.OperationalError", "FATAL: sorry, too many clients already"),
          ("TimeoutError", "upstream timed out"), ("KeyError", "'game_id'")]
UAS = ["Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
       "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Version/17.1 Mobile Safari/604.1"]
STATIC = ["/static/js/main.4f1c2a.js", "/static/css/main.9b0e11.css", "/favicon.ico", "/index.html"]


def weighted(items):
    vals, cum, acc = [], [], 0.0
    for v, w in items:
        acc += w
        vals.append(v)
        cum.append(acc)
    return vals, cum


def parse_end(text):
    if text is None:
        now = int(time.time())
        return (now - now % 60) * SEC
    if text.isdigit():
        v = int(text)
        return v * SEC if v < 10**12 else v
    d = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return int(d.timestamp()) * SEC


_MINUTES = {}


def _minute(ns):
    """(RFC 3339 prefix, nginx prefix) of the minute of `ns`, cached: strftime per line is slow."""
    key = ns // MIN
    p = _MINUTES.get(key)
    if p is None:
        d = datetime.datetime.fromtimestamp(key * 60, datetime.timezone.utc)
        p = (d.strftime("%Y-%m-%dT%H:%M:"), d.strftime("%d/%b/%Y:%H:%M:"))
        _MINUTES[key] = p
    return p


def rfc3339(ns):
    return "%s%02d.%06dZ" % (_minute(ns)[0], (ns % MIN) // SEC, (ns % SEC) // 1000)


def nginx_time(ns):
    return "%s%02d +0000" % (_minute(ns)[1], (ns % MIN) // SEC)


class Gen:
    """Formats lines; normal traffic draws from `rnd`, incidents from their own generator."""

    def __init__(self, seed):
        self.rnd = random.Random(seed)
        rnd = self.rnd
        seen, users = set(), []
        for name in ("admin", "ops.lead", "maya.cohen", "itai.levi", "shira.katz"):
            seen.add(name)
            users.append(name)
        while len(users) < N_USERS:
            n = "%s.%s" % (rnd.choice(FIRST), rnd.choice(LAST))
            if n in seen:
                n = "%s%d" % (n, rnd.randrange(10, 999))
            if n not in seen:
                seen.add(n)
                users.append(n)
        self.users = [(i + 1, n) for i, n in enumerate(users)]
        self.ips = {}
        for uid, _ in self.users:
            self.ips[uid] = "10.%d.%d.%d" % (rnd.randrange(1, 250), rnd.randrange(256), rnd.randrange(1, 255))
        self.act_v, self.act_c = weighted([((a, m, au), w) for a, w, m, au in ACTIONS])
        self.victim = self.users[VICTIM_INDEX]

    def uuid(self, rnd):
        x = rnd.getrandbits(122)
        return "%08x-%04x-4%03x-%04x-%012x" % (x >> 90, (x >> 74) & 0xFFFF, (x >> 62) & 0xFFF,
                                               0x8000 | ((x >> 48) & 0x3FFF), x & 0xFFFFFFFFFFFF)

    # ---- line formats (hand-written JSON: every value is ASCII without quotes or backslashes,
    # except the error stack, which is escaped explicitly; json.dumps per line would halve speed)
    def backend_line(self, ts, level, logger, message, cid, uid, uname, action, rtype, rid, dur, ip, method,
                     path, status, extra=""):
        return ('{"timestamp":"%s","level":"%s","logger":"%s","message":"%s","correlation_id":"%s",'
                '"user_id":%d,"username":"%s","action":"%s","resource_type":"%s","resource_id":"%s",'
                '"duration_ms":%.1f,"ip":"%s","method":"%s","path":"%s","status":%d%s}') % (
            rfc3339(ts), level, logger, message, cid, uid, uname, action, rtype, rid, dur, ip, method, path,
            status, extra)

    def audit_line(self, ts, cid, uid, uname, action, rtype, rid, ip, success, dur, args, result):
        return ('{"timestamp":"%s","level":"INFO","logger":"audit","message":"audit %s %s","correlation_id":"%s",'
                '"user_id":%d,"username":"%s","action":"%s","resource_type":"%s","resource_id":"%s","ip":"%s",'
                '"success":%s,"duration_ms":%.1f,"arguments":%s,"result":%s}') % (
            rfc3339(ts), action.lower(), rtype.lower(), cid, uid, uname, action, rtype, rid, ip,
            "true" if success else "false", dur, json.dumps(args, separators=(",", ":")),
            json.dumps(result, separators=(",", ":")))

    def nginx_line(self, ts, ip, method, path, status, size, ua, rt, cid):
        return '%s - - [%s] "%s %s HTTP/1.1" %d %d "-" "%s" rt=%.3f req_id=%s' % (
            ip, nginx_time(ts), method, path, status, size, ua, rt, cid)

    def pg_line(self, level, table, op, record_id, app_user, changed, dur_ms, cid, old=None, new=None):
        line = 'level=%s table=%s operation=%s record_id=%d app_user_id=%d db_user="tovplay_app" changed_fields="%s"' % (
            level, table, op, record_id, app_user, changed)
        if old is not None:
            line += " old=%s" % json.dumps(json.dumps(old, separators=(",", ":")))
        if new is not None:
            line += " new=%s" % json.dumps(json.dumps(new, separators=(",", ":")))
        return line + " duration=%dms correlation_id=%s" % (dur_ms, cid)


class Normal:
    """Normal traffic of one minute."""

    def __init__(self, g, quiet_from):
        self.g = g
        self.rnd = g.rnd
        self.quiet_from = quiet_from       # the victim does nothing after this (incident window)
        self.src_v, self.src_c = weighted(SOURCES)
        self.counts = {"victim_logins": 0, "victim_logins_new_ip": 0, "victim_perm": 0}

    def user(self):
        r = self.rnd.random()
        return self.g.users[int(N_USERS * r * r ** 0.5) % N_USERS]

    def emit(self, t, out):
        src = self.src_v[bisect.bisect_left(self.src_c, self.rnd.random() * self.src_c[-1])]
        getattr(self, src)(t, out)

    def backend(self, t, out):
        g, rnd = self.g, self.rnd
        uid, uname = self.user()
        if uid == g.victim[0] and t >= self.quiet_from:
            uid, uname = g.users[-2]
        action, method, audited = g.act_v[bisect.bisect_left(g.act_c, rnd.random() * g.act_c[-1])]
        rtype, plural, table = RESOURCES[int(rnd.random() * 4)]
        rid = (1 + int(rnd.random() * (3000 - 1)))
        if action == "LOGIN":
            rtype, path, rid = "User", "/api/auth/login", uid
        elif action == "LOGOUT":
            rtype, path, rid = "User", "/api/auth/logout", uid
        elif action == "EXPORT":
            rtype, path = "User", "/api/admin/export"
        elif action == "PERMISSION_CHANGE":
            rtype, table = "User", "users"
            path = "/api/admin/users/%d/roles" % rid
        elif action == "READ" and rnd.random() < 0.05:
            rtype, path = "Score", SLOW_PATH
        elif action in ("READ", "CREATE") and rnd.random() < 0.5:
            path = "/api/" + plural
        else:
            path = "/api/%s/%d" % (plural, rid)
        r = rnd.random()
        if action == "LOGIN":
            status = 401 if r < 0.05 else 200
        elif r < 0.006:
            status = 500
        elif r < 0.03:
            status = 404
        elif r < 0.04:
            status = 403
        else:
            status = 201 if action == "CREATE" else 200
        level = "ERROR" if status >= 500 else ("WARNING" if status >= 400 else "INFO")
        dur = min(900.0, round(rnd.lognormvariate(3.3, 0.9), 1))
        cid = g.uuid(rnd)
        ip = g.ips[uid]
        extra = ""
        if status >= 500:
            err, msg = ERRORS[rnd.randrange(len(ERRORS))]
            extra = (',"error":"%s: %s","stack":"Traceback (most recent call last):\\n  File \\"/app/app/routes/%s.py\\",'
                     ' line %d, in handle\\n%s: %s"') % (err, msg, table, (20 + int(rnd.random() * (400 - 20))), err, msg)
        meta = {"trace_id": "%032x" % rnd.getrandbits(128)} if rnd.random() < 0.5 else None
        s = S_BACKEND[int(rnd.random() * 4)]
        message = "%s %s" % (action.lower(), rtype.lower())
        line = g.backend_line(t, level, "app.routes.%s" % table, message, cid, uid, uname, action, rtype, rid, dur,
                              ip, method, path, status, extra)
        out.append((t, s, line, meta))
        if uid == g.victim[0] and action == "LOGIN":
            self.counts["victim_logins"] += 1
        if uid == g.victim[0] and action == "PERMISSION_CHANGE":
            self.counts["victim_perm"] += 1
        if audited and status < 500 and rnd.random() < 0.5:
            # The audit decorator's row of the same call (half of them, to keep the mix).
            ok = status < 400
            a = g.audit_line(t + 2 * MS, cid, uid, uname, action, rtype, rid, ip, ok, dur,
                             {"%s_id" % table: rid}, {"ok": ok})
            out.append((t + 2 * MS, s, a, meta))
            if uid == g.victim[0] and action == "LOGIN":
                self.counts["victim_logins"] += 1
            if uid == g.victim[0] and action == "PERMISSION_CHANGE":
                self.counts["victim_perm"] += 1

    def nginx(self, t, out):
        g, rnd = self.g, self.rnd
        uid = self.user()[0]
        ip = g.ips[uid]
        r = rnd.random()
        if r < 0.3:
            method, path = "GET", STATIC[rnd.randrange(len(STATIC))]
        elif r < 0.35:
            method, path = "GET", "/healthz"
        elif r < 0.38:
            method, path = "GET", SLOW_PATH
        else:
            _, plural, _ = RESOURCES[int(rnd.random() * 4)]
            method = ("GET", "GET", "GET", "POST", "PUT", "DELETE")[int(rnd.random() * 6)] if rnd.random() < 0.9 else "GET"
            path = "/api/%s/%d" % (plural, (1 + int(rnd.random() * (3000 - 1))))
        r = rnd.random()
        status = 502 if r < 0.004 else (500 if r < 0.01 else (404 if r < 0.05 else (304 if r < 0.1 else 200)))
        size = 0 if status == 304 else (120 + int(rnd.random() * (60000 - 120)))
        rt = min(0.9, rnd.lognormvariate(-3.2, 1.0))
        out.append((t, S_NGINX[int(rnd.random() * 2)],
                    g.nginx_line(t, ip, method, path, status, size, UAS[int(rnd.random() * 3)], rt, g.uuid(rnd)), None))

    def postgres(self, t, out):
        g, rnd = self.g, self.rnd
        uid = self.user()[0]
        if uid == g.victim[0] and t >= self.quiet_from:
            uid = g.users[-2][0]
        r = rnd.random()
        op = "INSERT" if r < 0.3 else ("DELETE" if r < 0.33 else "UPDATE")
        _, _, table = RESOURCES[int(rnd.random() * 4)]
        changed = ("name", "name,score", "status", "last_login", "score")[int(rnd.random() * 5)] if op == "UPDATE" else ""
        line = g.pg_line("info", table, op, (1 + int(rnd.random() * (3000 - 1))), uid, changed, (1 + int(rnd.random() * (300 - 1))), g.uuid(rnd))
        out.append((t, S_PG, line, None))

    def frontend(self, t, out):
        g, rnd = self.g, self.rnd
        uid, uname = self.user()
        if uid == g.victim[0] and t >= self.quiet_from:
            uid, uname = g.users[-2]
        r = rnd.random()
        level, msg = ("error", "Uncaught TypeError: x is undefined") if r < 0.02 else (
            ("warn", "Render slow") if r < 0.1 else ("info", ("Button clicked", "API call", "Page view")[int(rnd.random() * 3)]))
        roles = '["player","admin"]' if uid <= ADMINS else '["player"]'
        line = ('{"level":"%s","msg":"%s","user":{"id":%d,"name":"%s","roles":%s},"component":"%s",'
                '"correlation_id":"%s","url":"https://tovplay.example/%s","perf":{"render_ms":%.1f,"ttfb_ms":%d}}') % (
            level, msg, uid, uname, roles, ("GameBoard", "LoginForm", "Lobby", "Leaderboard")[int(rnd.random() * 4)],
            g.uuid(rnd), ("games", "lobby", "leaderboard", "profile")[int(rnd.random() * 4)], rnd.uniform(1, 400),
            (20 + int(rnd.random() * (900 - 20))))
        out.append((t, S_FRONTEND[int(rnd.random() * 2)], line, None))


def plan(g, end, span, backend_per_min):
    """The incidents: list of (ts, stream, line, metadata) and the truth about them."""
    prnd = random.Random(2500 + 0)        # incidents do not depend on --seed or --lines
    vid, vname = g.victim
    usual_ip = g.ips[vid]
    ents = []
    truth = {}

    def chain_ids():
        return g.uuid(prnd), "%032x" % prnd.getrandbits(128)

    # the victim's ordinary logins from the usual IP, earlier in the span
    usual = []
    for frac in (0.1, 0.35, 0.6):
        t = end - span + int(span * frac)
        if t < end - 3 * 3600 * SEC:
            cid, tr = chain_ids()
            ents.append((t, S_NGINX[0], g.nginx_line(t - MS, usual_ip, "POST", "/api/auth/login", 200, 310, UAS[1], 0.05, cid), None))
            ents.append((t, S_BACKEND[1], g.backend_line(t, "INFO", "app.routes.auth", "login ok", cid, vid, vname, "LOGIN", "User",
                                                          vid, 48.0, usual_ip, "POST", "/api/auth/login", 200), {"trace_id": tr}))
            ents.append((t + 3 * MS, S_BACKEND[1], g.audit_line(t + 3 * MS, cid, vid, vname, "LOGIN", "User", vid, usual_ip, True,
                                                                 48.0, {"username": vname}, {"ok": True}), {"trace_id": tr}))
            usual.append(t)

    # ---- scenario 2: brute force, success from a new IP, permission change, export
    bf_start = end - 50 * MIN
    failures = []
    for i in range(60):
        ip = ATTACKER_IP if i % 5 != 4 else ATTACKER_HELPERS[(i // 5) % 2]
        t = bf_start + i * 4 * SEC + prnd.randrange(SEC)
        cid, tr = chain_ids()
        ents.append((t - 2 * MS, S_NGINX[1], g.nginx_line(t - 2 * MS, ip, "POST", "/api/auth/login", 401, 57, "python-requests/2.31.0", 0.21, cid), None))
        ents.append((t, S_BACKEND[2], g.backend_line(t, "WARNING", "app.routes.auth", "invalid credentials", cid, vid, vname, "LOGIN",
                                                      "User", vid, round(180 + prnd.uniform(0, 40), 1), ip, "POST", "/api/auth/login", 401),
                     {"trace_id": tr}))
        ents.append((t + 3 * MS, S_BACKEND[2], g.audit_line(t + 3 * MS, cid, vid, vname, "LOGIN", "User", vid, ip, False, 201.0,
                                                             {"username": vname}, {"ok": False, "reason": "bad_password"}), {"trace_id": tr}))
        failures.append((t, ip))
    bf_end = failures[-1][0]
    login_t = end - 44 * MIN + 17 * SEC
    login_cid, login_tr = chain_ids()
    ents.append((login_t - 2 * MS, S_NGINX[1], g.nginx_line(login_t - 2 * MS, ATTACKER_IP, "POST", "/api/auth/login", 200, 310, "python-requests/2.31.0", 0.19, login_cid), None))
    ents.append((login_t, S_BACKEND[2], g.backend_line(login_t, "INFO", "app.routes.auth", "login ok", login_cid, vid, vname, "LOGIN", "User",
                                                        vid, 190.0, ATTACKER_IP, "POST", "/api/auth/login", 200), {"trace_id": login_tr}))
    ents.append((login_t + 3 * MS, S_BACKEND[2], g.audit_line(login_t + 3 * MS, login_cid, vid, vname, "LOGIN", "User", vid, ATTACKER_IP, True,
                                                               190.0, {"username": vname}, {"ok": True}), {"trace_id": login_tr}))
    after = []      # (ts, stream, line, meta) of the account's actions after the login
    perm_t = end - 42 * MIN + 5 * SEC
    accomplice = g.users[1999]
    cid, tr = chain_ids()
    after.append((perm_t, S_BACKEND[3], g.backend_line(perm_t, "WARNING", "app.routes.users", "roles changed", cid, vid, vname,
                                                       "PERMISSION_CHANGE", "User", accomplice[0], 35.2, ATTACKER_IP, "PATCH",
                                                       "/api/admin/users/%d/roles" % accomplice[0], 200), {"trace_id": tr}))
    ents.append((perm_t - 2 * MS, S_NGINX[1], g.nginx_line(perm_t - 2 * MS, ATTACKER_IP, "PATCH", "/api/admin/users/%d/roles" % accomplice[0],
                                                            200, 88, "python-requests/2.31.0", 0.04, cid), None))
    ents.append((perm_t + 8 * MS, S_PG, g.pg_line("info", "users", "UPDATE", accomplice[0], vid, "roles", 4, cid,
                                                  old={"id": accomplice[0], "roles": ["player"]},
                                                  new={"id": accomplice[0], "roles": ["player", "admin"]}), None))
    after.append((perm_t + 20 * MS, S_BACKEND[3], g.audit_line(perm_t + 20 * MS, cid, vid, vname, "PERMISSION_CHANGE", "User", accomplice[0],
                                                               ATTACKER_IP, True, 35.2, {"user_id": accomplice[0], "roles": ["player", "admin"]},
                                                               {"ok": True}), {"trace_id": tr}))
    export_t = end - 40 * MIN + 41 * SEC
    cid, tr = chain_ids()
    ents.append((export_t - 2 * MS, S_NGINX[1], g.nginx_line(export_t - 2 * MS, ATTACKER_IP, "GET", "/api/admin/export", 200, 8812331,
                                                              "python-requests/2.31.0", 0.89, cid), None))
    after.append((export_t, S_BACKEND[3], g.backend_line(export_t, "WARNING", "app.routes.users", "users exported", cid, vid, vname,
                                                         "EXPORT", "User", "all", 870.4, ATTACKER_IP, "GET", "/api/admin/export", 200),
                  {"trace_id": tr}))
    after.append((export_t + 5 * MS, S_BACKEND[3], g.audit_line(export_t + 5 * MS, cid, vid, vname, "EXPORT", "User", "all", ATTACKER_IP,
                                                                True, 870.4, {"format": "csv"}, {"rows": N_USERS}), {"trace_id": tr}))

    # ---- scenario 1: the wipe, one DELETE request per second for 4 minutes
    wipe_start = end - 35 * MIN + 12 * SEC
    wipe = []
    db_rows = {"game": 0, "score": 0}
    chain_sample = None
    for i in range(240):
        t = wipe_start + i * SEC + prnd.randrange(200 * MS)
        game = 3 + i * 11
        cid, tr = chain_ids()
        ents.append((t - 3 * MS, S_NGINX[0], g.nginx_line(t - 3 * MS, ATTACKER_IP, "DELETE", "/api/games/%d" % game, 200, 52,
                                                           "python-requests/2.31.0", 0.041, cid), None))
        after.append((t, S_BACKEND[0], g.backend_line(t, "WARNING", "app.routes.game", "game deleted", cid, vid, vname, "DELETE",
                                                      "Game", game, round(prnd.uniform(20, 60), 1), ATTACKER_IP, "DELETE",
                                                      "/api/games/%d" % game, 200), {"trace_id": tr}))
        scores = 1 + i % 3
        ents.append((t + 5 * MS, S_PG, g.pg_line("warn", "game", "DELETE", game, vid, "", prnd.randrange(2, 20), cid,
                                                 old={"id": game, "name": "game-%d" % game, "status": "active"}), None))
        for k in range(scores):
            ents.append((t + (6 + k) * MS, S_PG, g.pg_line("warn", "score", "DELETE", 100000 + game * 10 + k, vid, "",
                                                           prnd.randrange(1, 9), cid), None))
        after.append((t + 30 * MS, S_BACKEND[0], g.audit_line(t + 30 * MS, cid, vid, vname, "DELETE", "Game", game, ATTACKER_IP, True,
                                                              40.0, {"game_id": game}, {"deleted": True, "cascade": {"score": scores}}),
                      {"trace_id": tr}))
        db_rows["game"] += 1
        db_rows["score"] += scores
        wipe.append({"ts": t, "correlation_id": cid, "trace_id": tr, "game_id": game, "score_rows": scores})
        if chain_sample is None:
            chain_sample = {"correlation_id": cid, "trace_id": tr, "lines": {"nginx": 1, "tovplay-backend": 2, "postgres": 1 + scores}}
    ents.extend(after)

    # ---- scenario 3: the slow API, 15 minutes of /api/leaderboard taking 1.2-6 s
    slow_start = end - 3 * 3600 * SEC
    slow_end = slow_start + 15 * MIN
    per_min = max(6, int(backend_per_min * 0.08))
    n_slow = per_min * 15
    slow_sample = None
    slow_db = 0
    slow_504 = 0
    slow_lines = 0
    for i in range(n_slow):
        # Jitter within the line's own slot, so the last line stays inside the 15 minutes
        # (at 10M lines the slots are shorter than half a second).
        t = slow_start + int(i * (15 * MIN) / n_slow) + prnd.randrange(max(1, min(SEC // 2, (15 * MIN) // n_slow)))
        uid, uname = g.users[5 + prnd.randrange(N_USERS - 10)]
        cid, tr = chain_ids()
        dur = round(prnd.uniform(1200, 6000), 1)
        gateway_timeout = dur > 2500
        slow_504 += gateway_timeout
        ents.append((t - 2 * MS, S_NGINX[i % 2], g.nginx_line(t - 2 * MS, g.ips[uid], "GET", SLOW_PATH, 504 if gateway_timeout else 200,
                                                               167 if gateway_timeout else 5120, UAS[i % 3],
                                                               2.5 if gateway_timeout else dur / 1000, cid), None))
        ents.append((t, S_BACKEND[i % 4], g.backend_line(t, "WARNING", "app.routes.score", "leaderboard slow", cid, uid, uname, "READ",
                                                          "Score", "top100", dur, g.ips[uid], "GET", SLOW_PATH, 200), {"trace_id": tr}))
        slow_lines += 1
        ents.append((t + int(dur * MS) - 5 * MS, S_PG, g.pg_line("warn", "leaderboard", "UPDATE", 1 + i % 100, uid, "rank,score",
                                                                int(dur) - 600 + prnd.randrange(100), cid), None))
        slow_db += 1
        if slow_sample is None:
            slow_sample = {"correlation_id": cid, "trace_id": tr, "lines": {"nginx": 1, "tovplay-backend": 1, "postgres": 1}}

    truth["victim"] = {"user_id": vid, "username": vname, "usual_ip": usual_ip, "usual_logins": usual}
    truth["scenario2"] = {
        "user_id": vid, "username": vname, "usual_ip": usual_ip, "attacker_ip": ATTACKER_IP,
        "attacker_ips": sorted({ip for _, ip in failures}),
        "failed_logins": len(failures),
        "failed_by_ip": {ip: sum(1 for _, x in failures if x == ip) for ip in sorted({ip for _, ip in failures})},
        "brute_force_start_ns": failures[0][0], "brute_force_end_ns": bf_end,
        "login_ns": login_t, "login": rfc3339(login_t), "login_correlation_id": login_cid,
        "permission_change_ns": perm_t, "accomplice_user_id": accomplice[0], "accomplice_username": accomplice[1],
        "export_ns": export_t,
    }
    truth["scenario1"] = {
        "culprit_user_id": vid, "culprit_username": vname, "ip": ATTACKER_IP,
        "first_delete_ns": wipe[0]["ts"], "last_delete_ns": wipe[-1]["ts"],
        "first_delete": rfc3339(wipe[0]["ts"]), "last_delete": rfc3339(wipe[-1]["ts"]),
        "requests": len(wipe), "backend_lines": 2 * len(wipe), "db_rows_by_table": db_rows,
        "db_rows": db_rows["game"] + db_rows["score"],
        "correlation_ids": [w["correlation_id"] for w in wipe], "trace_ids": [w["trace_id"] for w in wipe],
        "game_ids": [w["game_id"] for w in wipe], "chain_sample": chain_sample,
        "preceding_login_ns": login_t,
    }
    truth["scenario3"] = {
        "path": SLOW_PATH, "start_ns": slow_start, "end_ns": slow_end, "start": rfc3339(slow_start), "end": rfc3339(slow_end),
        "slow_requests": n_slow, "backend_slow_lines": slow_lines, "db_slow_rows": slow_db, "nginx_504": slow_504,
        "chain_sample": slow_sample,
    }
    return ents, truth


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (push-*.json and truth.json are replaced)")
    ap.add_argument("--lines", type=int, default=1_000_000, help="total lines, incidents included")
    ap.add_argument("--end", help="end of the span: RFC 3339, unix seconds or ns [default: now, to the minute]")
    ap.add_argument("--hours", type=float, default=24, help="length of the span (at least 4)")
    ap.add_argument("--seed", type=int, default=25, help="seed of the normal traffic")
    ap.add_argument("--batch-bytes", type=int, default=1 << 20)
    a = ap.parse_args()
    if a.hours < 4:
        sys.exit("--hours must be at least 4 (the slow API incident is 3 hours before the end)")
    t_start = time.time()
    end = parse_end(a.end)
    span = int(a.hours * 3600) * SEC
    start = end - span
    minutes = span // MIN
    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):
        if f.startswith("push-") or f == "truth.json":
            os.remove(os.path.join(a.out, f))

    g = Gen(a.seed)
    backend_per_min = a.lines * SOURCES[0][1] / minutes
    planted, truth = plan(g, end, span, backend_per_min)
    n_normal = a.lines - len(planted)
    if n_normal < 0:
        sys.exit("--lines must be at least %d (the incidents alone)" % len(planted))
    planted.sort(key=lambda e: e[0])
    # per-minute counts on a diurnal curve (peak in the afternoon UTC), exact total
    w = [1.0 + 0.5 * math.sin(2 * math.pi * (((start // MIN + m) % 1440) / 60.0 - 9.0) / 24.0) for m in range(minutes)]
    tot = sum(w)
    counts, acc, prev = [], 0.0, 0
    for m in range(minutes):
        acc += w[m]
        cur = round(n_normal * acc / tot)
        counts.append(cur - prev)
        prev = cur

    quiet_from = end - 2 * 3600 * SEC
    normal = Normal(g, quiet_from)
    rnd = g.rnd
    # Lines each ground-truth count needs to see, counted from what is written (see `tally`).
    windows = {
        "last_hour": (end - 3600 * SEC, end),
        "wipe_pm5": (truth["scenario1"]["first_delete_ns"] - 5 * MIN, truth["scenario1"]["last_delete_ns"] + 5 * MIN),
        "after_login": (truth["scenario2"]["login_ns"], end),
    }
    counts_out = {k: 0 for k in ("s1_deletes_last_hour", "s1_db_deletes_wipe", "s1_suspect_deletes", "s2_after_login",
                                 "s2_db_after_login", "s2_logins", "s2_logins_new_ip", "s2_permission_changes",
                                 "s3_slow_lines", "s3_db_slow_rows", "total")}
    vid = str(g.victim[0])
    usual_ip = g.ips[g.victim[0]]
    jobs = {}
    tally_from = min(lo for lo, _ in windows.values())

    def tally(t, s, line):
        """Count the line for every ground-truth query it answers (parses only in the windows)."""
        job = JOB[s]
        jobs[job] = jobs.get(job, 0) + 1
        if job == "tovplay-backend":
            if '"duration_ms":' in line:
                d = float(line.split('"duration_ms":', 1)[1].split(",", 1)[0])
                if d > 1000:
                    counts_out["s3_slow_lines"] += 1
            if ('"user_id":%s,' % vid) in line:
                rec = json.loads(line)
                if rec.get("action") == "LOGIN":
                    counts_out["s2_logins"] += 1
                    if rec.get("ip") != usual_ip:
                        counts_out["s2_logins_new_ip"] += 1
                if rec.get("action") == "PERMISSION_CHANGE":
                    counts_out["s2_permission_changes"] += 1
                if windows["after_login"][0] <= t <= windows["after_login"][1]:
                    counts_out["s2_after_login"] += 1
                if windows["last_hour"][0] <= t <= windows["last_hour"][1] and rec.get("action") == "DELETE":
                    counts_out["s1_suspect_deletes"] += 1
            if t >= tally_from and windows["last_hour"][0] <= t <= windows["last_hour"][1] and '"action":"DELETE"' in line:
                counts_out["s1_deletes_last_hour"] += 1
        elif job == "postgres":
            d = int(line.rsplit(" duration=", 1)[1].split("ms", 1)[0])
            if d > 500:
                counts_out["s3_db_slow_rows"] += 1
            if t >= tally_from:
                if windows["wipe_pm5"][0] <= t <= windows["wipe_pm5"][1] and " operation=DELETE " in line:
                    counts_out["s1_db_deletes_wipe"] += 1
                if windows["after_login"][0] <= t <= windows["after_login"][1] and (" app_user_id=%s " % vid) in line:
                    counts_out["s2_db_after_login"] += 1

    last_ts = [0] * len(STREAMS)
    batch = {}
    bsize = 0
    nb = 0
    total = 0

    def flush():
        nonlocal batch, bsize, nb
        if not batch:
            return
        body = json.dumps({"streams": [{"stream": STREAMS[s], "values": v} for s, v in batch.items()]},
                          separators=(",", ":"))
        with open(os.path.join(a.out, "push-%06d.json" % nb), "w", encoding="utf-8") as f:
            f.write(body)
        nb += 1
        batch, bsize = {}, 0

    pi = 0
    for m in range(minutes):
        ms = start + m * MIN
        ents = []
        while len(ents) < counts[m]:
            normal.emit(ms + int(rnd.random() * MIN), ents)
        del ents[counts[m]:]
        while pi < len(planted) and planted[pi][0] < ms + MIN:
            ents.append(planted[pi])
            pi += 1
        ents.sort(key=lambda e: e[0])
        for t, s, line, meta in ents:
            if t <= last_ts[s]:
                t = last_ts[s] + 1
            last_ts[s] = t
            if t >= end:
                continue
            tally(t, s, line)
            batch.setdefault(s, []).append([str(t), line, meta] if meta else [str(t), line])
            total += 1
            bsize += len(line) + (90 if meta else 30)
            if bsize >= a.batch_bytes:
                flush()
    flush()
    counts_out["total"] = total
    s1, s2, s3 = truth["scenario1"], truth["scenario2"], truth["scenario3"]
    out = {
        "generator": "scripts/playbook/gen.py", "seed": a.seed, "lines": total, "batches": nb,
        "streams": STREAMS, "lines_per_job": jobs,
        "start_ns": start, "end_ns": end, "start": rfc3339(start), "end": rfc3339(end),
        "vars": {
            "victim_id": str(s2["user_id"]), "victim_username": s2["username"], "usual_ip": s2["usual_ip"],
            "attacker_ip": s2["attacker_ip"], "wipe_correlation_id": s1["chain_sample"]["correlation_id"],
            "wipe_trace_id": s1["chain_sample"]["trace_id"], "slow_path": s3["path"],
            "slow_correlation_id": s3["chain_sample"]["correlation_id"],
        },
        # [start, end] in ns of the time range each query runs over, and instants of the alert checks
        "ranges": {
            "span": [start, end],
            "last_hour": list(windows["last_hour"]),
            "wipe_pm5": list(windows["wipe_pm5"]),
            "after_login": list(windows["after_login"]),
            "slow": [s3["start_ns"], s3["end_ns"]],
            "slow_pm30": [s3["start_ns"] - 30 * MIN, s3["end_ns"] + 30 * MIN],
        },
        "instants": {
            "wipe_end": s1["last_delete_ns"] + SEC,
            "wipe_end_plus_1m": s1["last_delete_ns"] + MIN,
            "brute_force_end": s2["brute_force_end_ns"] + SEC,
            "slow_end": s3["end_ns"],
        },
        "counts": counts_out,
        "scenario1": s1, "scenario2": s2, "scenario3": s3, "victim": truth["victim"],
        "gen_seconds": round(time.time() - t_start, 1),
    }
    with open(os.path.join(a.out, "truth.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({"lines": total, "batches": nb, "start": out["start"], "end": out["end"],
                      "gen_seconds": out["gen_seconds"]}))


if __name__ == "__main__":
    main()
