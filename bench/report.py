#!/usr/bin/env python3
"""The report of bench/run.sh: reads the JSON that parley-bench wrote for each
run, prints the table (Parley's figure, the floor's, and their ratio), writes
latest.json and the data files that plot.gp draws.

Usage: report.py --manifest FILE --json-dir DIR --out DIR [--quick 0|1] ...
The manifest has one tab-separated line per table row:
NAME KIND WHAT SETTINGS TARGET [FLOOR], where the runs are DIR/NAME.floor.json
and DIR/NAME.TARGET.json; FLOOR "none" marks a scenario run on Parley alone
(no floor run, no ratio), and "plain:OTHER[+OTHER2]" a TLS run (TARGET tls)
compared with plain Parley's run of OTHER (DIR/OTHER.parley.json) instead of
the floor: its ratio is TLS / plain, and latest.json's "tls" holds those
figures against issue 14's targets. With OTHER2 (and DIR/NAME.again.tls.json)
each side's figures are the means of its two runs. "tcp:OTHER[+OTHER2]" is
the same for a WebSocket run (TARGET ws) against TCP runs: latest.json's
"ws" holds its ratio against issue 17's target. "devices:OTHER+OTHER2" is the
same for runs with a second session per user (TARGET devices, parley-bench
--devices 2) against one: latest.json's "devices" holds what own copies cost.
Where DIR/NAME.mosquitto.json exists (the same scenario against mosquitto, the
bench speaking MQTT), the row also shows mosquitto's figure and Parley /
mosquitto, and latest.json's "mosquitto" holds issue 15's comparisons.
"""
import argparse
import json
import os
import platform
import sys
import time

# Issue 17: WebSocket throughput at least this share of TCP's, in the same run.
WS_MIN_RATIO = 0.8

# Issue 14: TLS throughput at least this share of plain TCP's, measured in
# the same run; an idle TLS connection at most this much server memory.
TLS_MIN_RATIO = 0.6
TLS_MAX_IDLE_BYTES = 16 * 1024

# Issue 15's targets, Parley / mosquitto in the same run, by row name:
# (metric, the bound, "max" or "min").
MQ_TARGETS = {
    "mq-direct-r5000": [("server CPU per msg", 2.0, "max"), ("latency p99", 3.0, "max")],
    "mq-direct-r20000": [("server CPU per msg", 2.0, "max"), ("latency p99", 3.0, "max")],
    "mq-direct-if1": [("delivered", 0.8, "min")],
    "mq-direct-if8": [("delivered", 1.5, "min")],
}


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(ram_kb / 1048576, 1),
        "kernel": platform.release(),
    }


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"ok": False, "failure": "no result (%s)" % e, "settings": {}, "results": {}}


def lat(run):
    return run.get("results", {}).get("latency_ms", {})


def fmt_num(v):
    if v is None:
        return "-"
    if v >= 100:
        return "{:,.0f}".format(v)
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def ratio(p, f):
    if p is None or f in (None, 0):
        return None
    return p / f


def fmt_ratio(r):
    if r is None:
        return "-"
    return "%.3f" % r if r < 10 else "%.1f" % r


def cpu(run):
    """The server's CPU time per message delivered in the window (us), its
    share of one core (%), and how long its threads waited for a core (% of
    the window, summed over threads): None when not measured (the cluster)."""
    r = run.get("results", {})
    share = r.get("server_cpu_share")
    wait = r.get("server_wait_share")
    return [("server CPU per msg", "us", r.get("server_cpu_us_per_msg")),
            ("server CPU", "% of a core", None if share is None else share * 100),
            # runnable, waiting for a core (threads summed): what others took
            ("server waiting for a CPU", "% of the time", None if wait is None else wait * 100)]


def own(run):
    """--devices: the own copies the senders' second sessions got, and their
    latency (None in a run with one session per user)."""
    r = run.get("results", {})
    ol = r.get("own_latency_ms", {}) if r.get("own_latency_ms", {}).get("count") else {}
    return [("own copies", "/s", r.get("own_delivered_per_s")),
            ("own copy latency p99", "ms", ol.get("p99"))]


def figures(kind, run):
    """[(metric, unit, value)] for one run."""
    r = run.get("results", {})
    if kind.startswith("devices-"):  # a second session per user: the same, and own copies
        return figures(kind.split("-", 1)[1], run) + own(run)
    if kind == "rate":
        return [("delivered", "msg/s", r.get("delivered_per_s")),
                ("latency p99", "ms", lat(run).get("p99"))] + cpu(run)
    if kind == "deliveries":
        return [("deliveries", "/s", r.get("delivered_per_s")),
                ("latency p99", "ms", lat(run).get("p99"))] + cpu(run)
    if kind == "latency":
        return [("latency p50", "ms", lat(run).get("p50")),
                ("latency p99", "ms", lat(run).get("p99")),
                ("latency p99.9", "ms", lat(run).get("p999")),
                ("delivered", "msg/s", r.get("delivered_per_s"))] + cpu(run)
    if kind == "memory":
        return [("server memory", "bytes/conn", r.get("bytes_per_conn")),
                ("connects", "/s", r.get("connects_per_s")),
                ("registers", "/s", r.get("registers_per_s")),
                ("logins", "/s", r.get("idle_logins_per_s"))]
    if kind == "logins":
        return [("logins", "/s", r.get("logins_per_s")),
                ("login latency p50", "ms", lat(run).get("p50")),
                ("login latency p99", "ms", lat(run).get("p99"))]
    if kind == "file":
        return [("upload", "MB/s", r.get("upload_mb_per_s")),
                ("download", "MB/s", r.get("download_mb_per_s")),
                ("upload time", "s", r.get("upload_s")),
                ("download time", "s", r.get("download_s"))]
    if kind == "regflood":
        fl = r.get("flood", {})
        # No message in a window: no latency to show (not 0).
        qlat = lat(run) if lat(run).get("count") else {}
        flat = r.get("flood_latency_ms", {}) if r.get("flood_latency_ms", {}).get("count") else {}
        return [("pair latency p99, no flood", "ms", qlat.get("p99")),
                ("pair latency p99, flood", "ms", flat.get("p99")),
                ("pair p99 flood / no flood", "x", r.get("p99_ratio")),
                ("pair latency max, flood", "ms", flat.get("max")),
                ("flood registered", "/s", fl.get("registered_per_s")),
                ("flood answered BUSY", "/s", fl.get("busy_per_s"))]
    return []


def cdf(run):
    """(x, latency_ms) points: x = 1 / (1 - q), the usual percentile axis."""
    hist = run.get("results", {}).get("latency_hist_ns") or []
    total = sum(c for _, c in hist)
    pts, seen = [], 0
    for lo, c in hist:
        seen += c
        q = seen / total
        if q >= 1:
            q = 1 - 1 / (total * 2)  # the last point: as far as the count allows
        pts.append((1 / (1 - q), lo / 1e6))
    return pts


def mean_figures(a, b):
    """Two runs' figures, value by value: their mean (None if either has none)."""
    return [(m, u, None if x is None or y is None else (x + y) / 2)
            for (m, u, x), (_, _, y) in zip(a, b)]


def tls_summary(rows, runs):
    """Issue 14's two TLS figures against their targets, from the TLS rows
    (the first of each kind): {} when the run had none."""
    out, lines = {}, []
    for r in rows:
        if r["base"] != "plain":
            continue
        if r["metric"] == "delivered" and "direct" not in out:
            met = r["ratio"] is not None and r["ratio"] >= TLS_MIN_RATIO
            out["direct"] = {"run": r["name"], "settings": r["settings"],
                             "runs_each": r.get("runs", 1),
                             "tls_msg_per_s": r["parley"], "plain_msg_per_s": r["floor"],
                             "ratio": r["ratio"], "target_min_ratio": TLS_MIN_RATIO,
                             "met": met,
                             # each run, in the order they ran: plain, TLS, TLS, plain
                             "each_msg_per_s": [
                                 runs[r["name"]][k].get("results", {}).get("delivered_per_s")
                                 for k in ("plain", r["target"], r["target"] + "_again",
                                           "plain_again") if k in runs[r["name"]]]}
            lines.append("TLS direct throughput: %s msg/s, plain %s msg/s%s: TLS / plain %s "
                         "(target at least %.1f): %s" %
                         (fmt_num(r["parley"]), fmt_num(r["floor"]),
                          " (means of 2 runs each)" if r.get("runs") == 2 else "",
                          fmt_ratio(r["ratio"]), TLS_MIN_RATIO, "met" if met else "MISSED"))
            each = out["direct"]["each_msg_per_s"]
            if len(each) == 4:
                lines.append("  each run (msg/s): plain %s, TLS %s, TLS %s, plain %s" %
                             tuple(fmt_num(x) for x in each))
        elif r["metric"] == "server memory" and "idle" not in out:
            b = r["parley"]
            met = b is not None and b <= TLS_MAX_IDLE_BYTES
            out["idle"] = {"run": r["name"], "settings": r["settings"],
                           "bytes_per_conn": b, "plain_bytes_per_conn": r["floor"],
                           "target_max_bytes": TLS_MAX_IDLE_BYTES, "met": met}
            lines.append("TLS idle connection: %s of server memory each (plain %s; target at "
                         "most 16 KiB): %s" %
                         ("-" if b is None else "%.1f KiB" % (b / 1024),
                          "-" if r["floor"] is None else "%.1f KiB" % (r["floor"] / 1024),
                          "met" if met else "MISSED"))
    if out:
        out["_lines"] = lines
    return out


def ws_summary(rows, runs):
    """Issue 17's WebSocket figure against its target, from the first
    "tcp:" row: {} when the run had none."""
    for r in rows:
        if r["base"] != "tcp" or r["metric"] != "delivered":
            continue
        met = r["ratio"] is not None and r["ratio"] >= WS_MIN_RATIO
        each = [runs[r["name"]][k].get("results", {}).get("delivered_per_s")
                for k in ("plain", r["target"], r["target"] + "_again", "plain_again")
                if k in runs[r["name"]]]
        lines = ["WebSocket direct throughput: %s msg/s, TCP %s msg/s%s: WS / TCP %s (target at "
                 "least %.1f): %s" %
                 (fmt_num(r["parley"]), fmt_num(r["floor"]),
                  " (means of 2 runs each)" if r.get("runs") == 2 else "",
                  fmt_ratio(r["ratio"]), WS_MIN_RATIO, "met" if met else "MISSED")]
        if len(each) == 4:
            lines.append("  each run (msg/s): TCP %s, WS %s, WS %s, TCP %s" %
                         tuple(fmt_num(x) for x in each))
        return {"run": r["name"], "settings": r["settings"], "ws_msg_per_s": r["parley"],
                "tcp_msg_per_s": r["floor"], "ratio": r["ratio"],
                "target_min_ratio": WS_MIN_RATIO, "met": met, "each_msg_per_s": each,
                "_lines": lines}
    return {}


# Issue 18: throughput with metrics counted and scraped each second, as a
# share of --no-metrics's in the same run: "within the noise" taken as this.
METRICS_MIN_RATIO = 0.95


def devices_summary(rows, runs):
    """Issue 16's cost of own copies: 2 sessions per user against 1, in the
    same run (the "devices:" rows); {} when the run had none."""
    out, lines = {}, []
    for r in rows:
        if r["base"] != "devices":
            continue
        d = out.setdefault(r["name"], {"settings": r["settings"]})
        d[r["metric"]] = {"two": r["parley"], "one": r["floor"], "ratio": r["ratio"]}
        if r["metric"] in ("delivered", "deliveries", "latency p99", "server CPU per msg"):
            lines.append("%s, %s: %s %s with 2 sessions per user, %s with 1 (2 / 1: %s)" %
                         (r["name"], r["metric"], fmt_num(r["parley"]), r["unit"],
                          fmt_num(r["floor"]), fmt_ratio(r["ratio"])))
        elif r["metric"] == "own copies":
            lines.append("%s: own copies %s/s to the senders' second sessions" %
                         (r["name"], fmt_num(r["parley"])))
    for name, d in out.items():
        each = [runs[name][k].get("results", {}).get("delivered_per_s")
                for k in ("plain", "devices", "devices_again", "plain_again") if k in runs[name]]
        d["each_msg_per_s"] = each  # in the order they ran: 1, 2, 2, 1 sessions
        if len(each) == 4:
            lines.append("  %s, each run (msg/s): 1 session %s, 2 sessions %s, 2 sessions %s, "
                         "1 session %s" % ((name,) + tuple(fmt_num(x) for x in each)))
    if out:
        out["_lines"] = lines
    return out


def metrics_summary(rows):
    """Issue 18's figure: metrics on (scraped) / off, from the first
    "metrics:" row; {} when the run had none."""
    for r in rows:
        if r["base"] != "metrics" or r["metric"] != "delivered":
            continue
        met = r["ratio"] is not None and r["ratio"] >= METRICS_MIN_RATIO
        return {"run": r["name"], "settings": r["settings"], "on_msg_per_s": r["parley"],
                "off_msg_per_s": r["floor"], "ratio": r["ratio"],
                "target_min_ratio": METRICS_MIN_RATIO, "met": met,
                "_lines": ["metrics: %s msg/s counted and scraped each second, %s msg/s with "
                           "--no-metrics (means of 2 runs each): on / off %s (within the noise: "
                           "at least %.2f): %s" %
                           (fmt_num(r["parley"]), fmt_num(r["floor"]), fmt_ratio(r["ratio"]),
                            METRICS_MIN_RATIO, "met" if met else "MISSED")]}
    return {}


def sync_summary(rows):
    """Issue 15's durability figures: parleyd --sync full (every commit
    fsynced) against --sync normal in the same run; {} without such rows."""
    out, lines = {}, []
    for r in rows:
        if r["base"] != "sync" or r["metric"] not in ("delivered", "latency p99"):
            continue
        out.setdefault(r["name"], {})[r["metric"]] = {
            "full": r["parley"], "normal": r["floor"], "ratio": r["ratio"]}
        lines.append("sync full: %s, %s %s against %s with --sync normal (full / normal %s)" %
                     (r["name"], r["metric"], fmt_num(r["parley"]), fmt_num(r["floor"]),
                      fmt_ratio(r["ratio"])))
    if out:
        out["_lines"] = lines
    return out


def mq_summary(rows):
    """Issue 15's comparisons (Parley / mosquitto) against its targets: {}
    when the run had no mosquitto rows."""
    out, lines = {}, []
    for name, targets in MQ_TARGETS.items():
        for metric, bound, how in targets:
            r = next((r for r in rows if r["name"] == name and r["metric"] == metric), None)
            if r is None or r.get("mosquitto_run") is not True:
                continue
            v = r["ratio_mosquitto"]
            met = v is not None and (v <= bound if how == "max" else v >= bound)
            out.setdefault(name, {})[metric] = {
                "settings": r["settings"], "parley": r["parley"], "mosquitto": r["mosquitto"],
                "ratio": v, "target": ("at most " if how == "max" else "at least ") + str(bound),
                "met": met}
            lines.append("%s, %s: %s: Parley %s, mosquitto %s: Parley / mosquitto %s (target %s "
                         "%s): %s" % (r["scenario"], r["settings"], metric, fmt_num(r["parley"]),
                                      fmt_num(r["mosquitto"]), fmt_ratio(v),
                                      "at most" if how == "max" else "at least", bound,
                                      "met" if met else "MISSED"))
    if out:
        out["_lines"] = lines
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--json-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--duration", default="")
    ap.add_argument("--warmup", default="")
    ap.add_argument("--elapsed", default="")
    a = ap.parse_args()

    rows, runs, failures = [], {}, []
    with open(a.manifest) as f:
        lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    lines = [l + ["floor"] * (6 - len(l)) for l in lines]
    for name, kind, what, settings, target, floor in lines:
        solo = floor == "none"
        # "plain:" (TLS against plain) and "metrics:" (metrics on against
        # off): the floor column is another Parley run's.
        base = (floor.split(":", 1)[0]
                if floor.startswith(("plain:", "metrics:", "sync:", "tcp:", "devices:"))
                else "floor")
        plain = base != "floor"
        again = {}  # TLS rows: the second run of each side
        if solo:
            fl = {"ok": True, "settings": {}, "results": {}}
        elif plain:
            others = floor.split(":", 1)[1].split("+")
            fl = load(os.path.join(a.json_dir, others[0] + ".parley.json"))
            if len(others) > 1:
                again["plain_again"] = load(os.path.join(a.json_dir, others[1] + ".parley.json"))
                again[target + "_again"] = load(os.path.join(a.json_dir,
                                                             name + ".again." + target + ".json"))
        else:
            fl = load(os.path.join(a.json_dir, name + ".floor.json"))
        pa = load(os.path.join(a.json_dir, name + "." + target + ".json"))
        runs[name] = {target: pa} if solo else {"plain" if plain else "floor": fl, target: pa}
        runs[name].update(again)
        mq_path = os.path.join(a.json_dir, name + ".mosquitto.json")
        mq = load(mq_path) if os.path.exists(mq_path) else None
        if mq is not None:
            runs[name]["mosquitto"] = mq
        for who, run in runs[name].items():
            if not run.get("ok", False):
                failures.append("%s on %s: %s" % (name, who, run.get("failure") or "failed"))
        pf = figures(kind, pa)
        ff = [(m, u, None) for m, u, _ in pf] if solo else figures(kind, fl)
        mf = figures(kind, mq) if mq is not None else [(m, u, None) for m, u, _ in pf]
        if again:
            pf = mean_figures(pf, figures(kind, again[target + "_again"]))
            ff = mean_figures(ff, figures(kind, again["plain_again"]))
        for (metric, unit, pv), (_, _, fv), (_, _, mv) in zip(pf, ff, mf):
            row = {
                "name": name, "scenario": what, "settings": settings, "target": target,
                "metric": metric, "unit": unit,
                "parley": pv, "floor": fv,
                "parley_ok": bool(pa.get("ok")), "floor_ok": bool(fl.get("ok")),
                "floor_run": not solo,
                # "plain": the floor column is plain Parley's run, the ratio TLS / plain
                "base": base,
            }
            if again:
                row["runs"] = 2
            row["ratio"] = ratio(row["parley"], row["floor"])
            if mq is not None:
                row["mosquitto"] = mv
                row["mosquitto_ok"] = bool(mq.get("ok"))
                row["mosquitto_run"] = True
                row["ratio_mosquitto"] = ratio(pv, mv)
            offered = pa.get("settings", {}).get("rate") or 0
            got = pa.get("results", {}).get("delivered_per_s") or 0
            if metric.startswith("latency") and offered and got < 0.95 * offered:
                row["note"] = "saturated: %s of %s msg/s offered were delivered" % (
                    fmt_num(got), fmt_num(offered))
            rows.append(row)

    # Rows whose figure no run has (CPU time for the cluster) are left out.
    rows = [r for r in rows if not r["metric"].startswith("server CPU") or r["parley"] is not None
            or r["floor"] is not None or r.get("mosquitto") is not None]

    # ---- the table ----
    with_mq = any(r.get("mosquitto_run") for r in rows)
    head = ("scenario", "settings", "figure", "Parley", "floor", "Parley/floor")
    if with_mq:
        head += ("mosquitto", "Parley/mosquitto")
    table = []
    for r in rows:
        par = fmt_num(r["parley"])
        if r["target"] != "parley":
            par += " (%s)" % {"tls": "TLS", "synced": "sync full", "ws": "WebSocket",
                              "devices": "2 sessions"}.get(r["target"], r["target"])
        if r.get("note"):
            par += " *"
        if not r["parley_ok"]:
            par += " FAIL"
        flo = fmt_num(r["floor"]) + ("" if r["floor_ok"] else " FAIL")
        if r["base"] == "plain":
            flo = fmt_num(r["floor"]) + " (plain)" + ("" if r["floor_ok"] else " FAIL")
        if r["base"] == "metrics":
            flo = fmt_num(r["floor"]) + " (no metrics)" + ("" if r["floor_ok"] else " FAIL")
        if r["base"] == "tcp":
            flo = fmt_num(r["floor"]) + " (TCP)" + ("" if r["floor_ok"] else " FAIL")
        if r["base"] == "sync":
            flo = fmt_num(r["floor"]) + " (sync normal)" + ("" if r["floor_ok"] else " FAIL")
        if r["base"] == "devices":
            flo = fmt_num(r["floor"]) + " (1 session)" + ("" if r["floor_ok"] else " FAIL")
        if not r["floor_run"]:
            flo = "(none)"
        cells = (r["scenario"], r["settings"], "%s (%s)" % (r["metric"], r["unit"]), par,
                 flo, fmt_ratio(r["ratio"]))
        if with_mq and r.get("mosquitto_run"):
            cells += (fmt_num(r["mosquitto"]) + ("" if r["mosquitto_ok"] else " FAIL"),
                      fmt_ratio(r["ratio_mosquitto"]))
        elif with_mq:
            cells += ("", "")
        table.append(cells)
    widths = [max(len(str(x[i])) for x in table + [head]) for i in range(len(head))]
    out = []
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    out.append("  ".join("-" * w for w in widths))
    prev = None
    for t in table:
        key = (t[0], t[1])
        cells = list(t)
        if key == prev:
            cells[0] = cells[1] = ""
        prev = key
        out.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())
    m = machine()
    print()
    print("Parley vs the floor (same machine, same settings, measured in this run)")
    print("machine: %d cores, %s, %.1f GiB RAM; Parley: embedded parleyd, SQLite WAL "
          "synchronous=NORMAL, --pwhash-cost min and its abuse limits raised above the bench's "
          "load, except where a row says otherwise" % (m["nproc"], m["cpu"], m["ram_gib"]))
    print("each run: %ss measured after %ss of warm-up%s" %
          (a.duration, a.warmup, "; QUICK smoke run" if a.quick == "1" else ""))
    loads = [run.get("settings", {}).get("loadavg_at_start") for v in runs.values()
             for run in v.values()]
    loads = [x for x in loads if isinstance(x, (int, float)) and x >= 0]
    if loads:
        m["loadavg_at_start"] = [min(loads), max(loads)]
        print("1-minute load average when runs started: %.2f to %.2f (the bench itself adds up to "
              "about 2; more means other work shared the machine)" % (min(loads), max(loads)))
    print()
    print("\n".join(out))
    notes = []
    for r in rows:
        n = "* %s, %s: %s (latency includes queueing)" % (r["scenario"], r["settings"], r.get("note"))
        if r.get("note") and n not in notes:
            notes.append(n)
    if notes:
        print()
        print("\n".join(notes))
    remarks = []
    for name in runs:
        for who, run in runs[name].items():
            res = run.get("results", {})
            if res.get("refused"):
                remarks.append("%s on %s: the server refused %d of %d sends (%s); %d of the refused "
                               "were delivered all the same" %
                               (name, who, res["refused"], res.get("sent", 0),
                                res.get("first_error", ""), res.get("delivered_unacknowledged", 0)))
            fl = res.get("flood") or {}
            if fl.get("errors"):
                remarks.append("%s on %s: %d flood registrations failed otherwise than BUSY "
                               "(the first: %s); %d flood connections were closed by the server" %
                               (name, who, fl["errors"], fl.get("first_error", ""),
                                fl.get("closed", 0)))
            if res.get("duplicates"):
                remarks.append("%s on %s: %d duplicate deliveries (same msgid; allowed, reported), "
                               "the first %.2f s into the run" %
                               (name, who, res["duplicates"], res.get("first_duplicate_s", -1)))
    if remarks:
        print()
        for r in remarks:
            print("note: " + r)
    print("\nratios: above 1 for latency, memory and CPU means Parley needs more than the floor "
          "(or mosquitto); below 1 for throughput means it does less. server CPU: the server "
          "process's user + system time in the measured window (/proc/PID/stat), per message "
          "delivered in it, and as a share of one core; waiting for a CPU: the time its threads were "
          "runnable but not running (/proc/PID/task/*/schedstat, summed over threads), which "
          "other work on the machine took from it.")
    mqs = mq_summary(rows)
    if mqs:
        print("mosquitto: Debian's broker, in memory (persistence false), QoS 1 both ways, the "
              "bench speaking MQTT 3.1.1 (--mqtt); issue 15's targets, Parley / mosquitto:")
        for line in mqs.pop("_lines"):
            print("  " + line)
    tls = tls_summary(rows, runs)
    if tls:
        print("TLS rows: Parley with --tls auto, the bench speaking TLS; the floor column holds "
              "plain Parley's figure from this run and the ratio is TLS / plain.")
        for line in tls.pop("_lines"):
            print(line)
    wss = ws_summary(rows, runs)
    if wss:
        print("WebSocket rows: Parley with --ws-port, the bench speaking WebSocket; the floor column "
              "holds TCP Parley's figure from this run and the ratio is WS / TCP.")
        for line in wss.pop("_lines"):
            print(line)
    mets = metrics_summary(rows)
    if mets:
        for line in mets.pop("_lines"):
            print(line)
    syncs = sync_summary(rows)
    if syncs:
        for line in syncs.pop("_lines"):
            print(line)
    devs = devices_summary(rows, runs)
    if devs:
        print("second-session rows (issue 16): each user also logged in a second time, that "
              "session only receiving; the floor column holds the same load with one session "
              "per user from this run and the ratio is 2 sessions / 1.")
        for line in devs.pop("_lines"):
            print("  " + line)
    if any(not r["floor_run"] for r in rows):
        print("floor (none): run on Parley alone at the default argon2id cost, which the floor "
              "does not pay; regflood compares the pair with itself, without and during the flood.")
    if failures:
        print("\nFAILED runs:")
        for f in failures:
            print("  " + f)
    sys.stdout.flush()

    # ---- latest.json ----
    os.makedirs(a.out, exist_ok=True)
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": m,
        "quick": a.quick == "1",
        "duration_s": float(a.duration or 0),
        "warmup_s": float(a.warmup or 0),
        "elapsed_s": float(a.elapsed or 0),
        "parley": {"mode": "embedded parleyd (and a local cluster)",
                   "pwhash_cost": "min (interactive in login-interactive and regflood)",
                   "limits": "raised above the bench's load (defaults in regflood)",
                   "durability": "SQLite WAL, synchronous=NORMAL, committed before SendOk"},
        "ok": not failures,
        "failures": failures,
        "tls": tls,
        "ws": wss,
        "metrics": mets,
        "sync": syncs,
        "devices": devs,
        "mosquitto": mqs,
        "rows": rows,
        "runs": runs,
    }
    tmp = os.path.join(a.out, "latest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(a.out, "latest.json"))

    # ---- data for plot.gp ----
    pd = os.path.join(a.out, "plot")
    os.makedirs(pd, exist_ok=True)

    def series(prefix, key, fname):
        pts = []
        for r in rows:
            if r["name"].startswith(prefix) and r["metric"] in ("delivered", "deliveries") \
                    and r["target"] == "parley":
                s = runs[r["name"]]["parley"].get("settings", {})
                x = s.get(key)
                if x:
                    pts.append((x, r["parley"] or 0, r["floor"] or 0))
        with open(os.path.join(pd, fname), "w") as f:
            f.write("# x parley floor\n")
            for x, p, fl in sorted(pts) or [(1, 0, 0)]:  # none (BENCH_ONLY): a chart all the same
                f.write("%s %s %s\n" % (x, p, fl))

    # Only the 8-in-flight runs belong on the connections axis.
    pts = []
    for r in rows:
        if r["name"].startswith("direct-c") and r["name"].endswith("-if8") and r["metric"] == "delivered":
            pts.append((runs[r["name"]]["parley"].get("settings", {}).get("conns", 0),
                        r["parley"] or 0, r["floor"] or 0))
    with open(os.path.join(pd, "direct.dat"), "w") as f:
        f.write("# conns parley floor\n")
        for x, p, fl in sorted(pts) or [(1, 0, 0)]:
            f.write("%s %s %s\n" % (x, p, fl))
    series("group-m", "group_size", "group.dat")

    plots = []
    for name, kind, what, settings, target, floor in lines:
        if kind not in ("latency", "devices-latency"):
            continue
        # A second-session row: its runs with 1 session per user beside it.
        for who in ("floor", "mosquitto", "plain" if kind == "devices-latency" else "", target):
            if who not in runs[name]:
                continue
            run = runs[name][who]
            pts = cdf(run)
            if not pts:
                continue
            fn = "lat_%s_%s.dat" % (name, who)
            with open(os.path.join(pd, fn), "w") as f:
                for x, y in pts:
                    f.write("%g %g\n" % (x, y))
            rate = run.get("settings", {}).get("rate", 0)
            title = "%s %s/s%s" % ({"parley": "Parley", "cluster": "cluster",
                                    "plain": "Parley, 1 session",
                                    "devices": "Parley, 2 sessions"}.get(who, who),
                                   fmt_num(rate), " (mq)" if name.startswith("mq-") else "")
            plots.append("dir.'/%s' using 1:2 with lines lw 2 title '%s'" % (fn, title))
    with open(os.path.join(pd, "lat.gp"), "w") as f:
        if plots:
            f.write("plot " + ", \\\n  ".join(plots) + "\n")
        else:
            # (a constant: gnuplot fails a plot with no valid point at all)
            f.write("set label 1 'no latency runs' at graph 0.4, 0.5\n"
                    "plot 1 lc rgb 'white' notitle\nunset label 1\n")

    # Server CPU per delivered message, by scenario: floor, mosquitto, Parley
    # (a mosquitto run missing: 0, a gap in the chart).
    with open(os.path.join(pd, "cpu.dat"), "w") as f:
        f.write("# scenario floor mosquitto parley (us per message)\n")
        n = 0
        for r in rows:
            if r["metric"] != "server CPU per msg" or r["base"] != "floor" or r["parley"] is None:
                continue
            f.write('"%s" %g %g %g\n' % (r["name"], r["floor"] or 0, r.get("mosquitto") or 0,
                                         r["parley"] or 0))
            n += 1
        if not n:
            f.write('"none" 0 0 0\n')
    # Parley / mosquitto: issue 15's figures (throughput in the closed loop;
    # p99 and CPU per message at an offered rate).
    with open(os.path.join(pd, "ratios_mq.dat"), "w") as f:
        n = 0
        for name, targets in MQ_TARGETS.items():
            for metric, bound, how in targets:
                r = next((r for r in rows if r["name"] == name and r["metric"] == metric), None)
                if r is None or r.get("ratio_mosquitto") is None:
                    continue
                label = "%s %s" % (name, {"delivered": "msg/s", "latency p99": "p99",
                                          "server CPU per msg": "CPU/msg"}[metric])
                f.write('"%s" %g %g\n' % (label, r["ratio_mosquitto"], bound))
                n += 1
        if not n:
            f.write('"none" 1 1\n')
    with open(os.path.join(pd, "ratios.dat"), "w") as f:
        n = 0
        for r in rows:
            if r["base"] != "floor":
                continue  # TLS / plain is not a ratio to the floor
            if r["ratio"] is None or r["metric"] not in ("delivered", "deliveries", "logins",
                                                         "server memory", "latency p99"):
                continue
            # At an offered rate latency is the point, not throughput; elsewhere
            # the other way round.
            at_rate = r["name"].split("-")[-1].startswith("r")
            if (r["metric"] == "latency p99") != at_rate:
                continue
            label = "%s %s" % (r["name"], {"server memory": "memory", "logins": "logins",
                                            "latency p99": "p99"}.get(r["metric"], ""))
            f.write('"%s" %g\n' % (label.replace('"', ""), r["ratio"]))
            n += 1
        if not n:  # no floor row (BENCH_ONLY): a chart all the same
            f.write('"none" 1\n')
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
