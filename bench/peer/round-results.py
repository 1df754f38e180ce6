#!/usr/bin/env python3
"""Turns the archives of one bench/peer/device-round.sh call (the files the device returns:
suite.tgz, replay.tgz, split.tgz, trace.tgz, gb.tgz, gbbest.tgz, optin.tgz, engine.tgz, serve.tgz, grpo.tgz) into bench/results JSON
files, so a session spends its minutes on the figures, not on reformatting them:

  python3 bench/peer/round-results.py FILES_AT --tag run6 --commit abc1234 [--out bench/results]

Writes, for the parts present (each file in the {"card", "date", "command", "results"} form):
  cuda-checks-DATE-TAG-CARD.json        suite and optin: tests / pass / fail / skipped per part
  decode-replay-ab-DATE-TAG-CARD.json   replay and split: every setting's figures, prefixed by its tag
  decode-trace-DATE-TAG-CARD.json       trace: the traced replay's per-kernel figures
  gpu-{decode,peer-hf,serve-c64,summary}-DATE-TAG-CARD.json               gb
  gpu-{decode,peer-hf,serve-c64,summary}-best-DATE-TAG-CARD.json          gbbest (its setting first in "command")
  grpo-step-3b[-SETTING]-DATE-TAG-CARD.json   grpo (one per setting; the defaults' without one)
  gpu-decode-ab-DATE-TAG-CARD.json      engine: every run's figures, named SETTING-RUN_figure
  gpu-serve-ab-DATE-TAG-CARD.json       serve: the same
and prints one line per file. CARD is h100 / h200 from the card's name. Existing files are not
overwritten (pass a new --tag). The results table lines in bench/results/README.md stay to write
by hand: they say what the figures mean.
"""
import argparse
import json
import os
import re
import sys
import tarfile
import tempfile


def card_tag(card):
    for tag in ("H200", "H100", "A100", "4090"):
        if tag in card:
            return tag.lower()
    return re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")


def load(path):
    with open(path) as f:
        return json.load(f)


def suite_counts(log_path):
    text = open(log_path, encoding="utf-8", errors="replace").read()
    out = {}
    for key in ("tests", "pass", "fail", "skipped"):
        m = re.search(r"^ℹ %s (\d+)" % key, text, re.M)
        if m is None:
            raise ValueError("%s: no '%s' count (the suite did not finish?)" % (log_path, key))
        out[key] = int(m.group(1))
    return out


def gb_summary(d, card, date, at):
    """The acceptance figures in one file (README's table reads these): decode tokens/s with
    floor and peer per batch, batch 1 without the engine, serve c64."""
    dec_p, srv_p = os.path.join(d, "gpu-decode.json"), os.path.join(d, "gpu-serve-c64.json")
    if not (os.path.exists(dec_p) and os.path.exists(srv_p)):
        return None
    dec, srv = load(dec_p), load(srv_p)
    by = lambda doc: {r["name"]: r for r in doc["results"]}
    dr, sr = by(dec), by(srv)
    out = []
    for name, r in dr.items():
        if re.fullmatch(r"decode_b\d+_tokens_per_s", name):
            row = {"name": name, "value": round(r["value"], 1), "unit": r["unit"]}
            for k in ("floor", "peer"):
                if k in r:
                    row[k] = round(r[k], 1)
            out.append(row)
    if "decode_b1_forward_only_tokens_per_s" in dr:
        out.append({"name": "decode_b1_without_engine_tokens_per_s", "value": round(dr["decode_b1_forward_only_tokens_per_s"]["value"], 1), "unit": "tokens/s"})
    for src, name in (("output_throughput", "serve_c64_output_tokens_s"), ("total_token_throughput", "serve_c64_total_tokens_s"),
                      ("median_ttft_ms", "serve_c64_median_ttft_ms"), ("p99_ttft_ms", "serve_c64_p99_ttft_ms"),
                      ("median_tpot_ms", "serve_c64_median_tpot_ms"), ("median_itl_ms", "serve_c64_median_itl_ms"),
                      ("p99_itl_ms", "serve_c64_p99_itl_ms")):
        if src in sr:
            out.append({"name": name, "value": sr[src]["value"], "unit": sr[src]["unit"]})
    return {"card": card, "date": date, "command": "device-gpu-bench.sh with --cuda-graphs (part gb)" + at, "results": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files_at", help="the folder the device call's archives came back in")
    ap.add_argument("--tag", required=True, help="this call's tag in the file names, e.g. run6")
    ap.add_argument("--commit", required=True, help="the commit the device ran")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results"))
    a = ap.parse_args()
    if not re.fullmatch(r"[a-z0-9-]+", a.tag):
        sys.exit("--tag: lower-case letters, digits and '-' only")
    work = tempfile.mkdtemp(prefix="round-results-")
    parts = {}
    for name in sorted(os.listdir(a.files_at)):
        if name.endswith(".tgz"):
            dest = os.path.join(work, name[:-4])
            os.makedirs(dest)
            with tarfile.open(os.path.join(a.files_at, name)) as tar:
                tar.extractall(dest, filter="data")
            parts[name[:-4]] = dest
    if not parts:
        sys.exit("%s: no .tgz archives" % a.files_at)

    card = None
    date = None
    for d in parts.values():
        for f in sorted(os.listdir(d)):
            if f.endswith(".json"):
                doc = load(os.path.join(d, f))
                card, date = doc.get("card", card), doc.get("date", date)
                break
        if card:
            break
    for d in parts.values():  # a suite-only call has no JSON: the log's header line names the card
        for f in sorted(os.listdir(d)):
            if card is None and f.endswith(".log"):
                m = re.search(r"^card: (.+?)\s+date: (\d{4}-\d{2}-\d{2})", open(os.path.join(d, f), errors="replace").read(), re.M)
                if m:
                    card, date = m.group(1), m.group(2)
    if card is None or date is None:
        sys.exit("no card / date found in the archives")
    suffix = "%s-%s-%s.json" % (date, a.tag, card_tag(card))
    written = []

    def write(stem, doc):
        path = os.path.join(a.out, "%s-%s" % (stem, suffix))
        if os.path.exists(path):
            sys.exit("%s exists: pick another --tag" % path)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        written.append(path)
        print("%s: %d figures" % (os.path.relpath(path), len(doc["results"])))

    at = " (bench/peer/device-round.sh, commit %s)" % a.commit
    checks = []
    for part, label in (("suite", "defaults"), ("optin", "opt_in")):
        log = os.path.join(parts.get(part, ""), "cuda-tests.log")
        if part in parts and os.path.exists(log):
            for k, v in suite_counts(log).items():
                checks.append({"name": "%s_%s" % (label, k), "value": v, "unit": "tests"})
    # The serve-level GPU test, run alone after the suite (suite part only).
    log = os.path.join(parts.get("suite", ""), "responsive.log")
    if "suite" in parts and os.path.exists(log):
        for k, v in suite_counts(log).items():
            checks.append({"name": "responsive_%s" % k, "value": v, "unit": "tests"})
    if checks:
        write("cuda-checks", {"card": card, "date": date, "command": "node --import tsx --test test/backend/cuda.test.ts test/engine/cuda-graphs.test.ts test/backend/cuda-training.test.ts "
                              "(parts suite and optin), then test/server/cuda-responsive.test.ts alone (part suite)" + at, "results": checks})

    replay = []
    for part in ("replay", "split"):
        d = parts.get(part)
        if d is None:
            continue
        for f in sorted(os.listdir(d)):
            if f.startswith("replay-") and f.endswith(".json"):
                setting = f[len("replay-"):-len(".json")]
                for r in load(os.path.join(d, f))["results"]:
                    replay.append(dict(r, name="%s_%s_%s" % (part, setting, r["name"])))
    if replay:
        write("decode-replay-ab", {"card": card, "date": date, "command": "bench/decode-replay.ts once per setting, parts replay (context 128) and split (context 160)" + at, "results": replay})

    # engine and serve: one file each, every run's figures prefixed by its setting and run number.
    for part, prefix, stem, what in (("engine", "engine-", "gpu-decode-ab", "bench/gpu-decode.ts --cuda-graphs per setting, interleaved (part engine)"),
                                     ("serve", "serve-", "gpu-serve-ab", "bench/serve.ts c64 against a server per setting (part serve, bench/peer/device-serve-ab.sh)")):
        d = parts.get(part)
        if d is None:
            continue
        rows = []
        for f in sorted(os.listdir(d)):
            if f.startswith(prefix) and f.endswith(".json"):
                run = f[len(prefix):-len(".json")]  # SETTING-RUN
                rows += [dict(r, name="%s_%s" % (run, r["name"])) for r in load(os.path.join(d, f))["results"]]
        if rows:
            write(stem, {"card": card, "date": date, "command": what + at, "results": rows})

    if "trace" in parts and os.path.exists(os.path.join(parts["trace"], "trace.json")):
        doc = load(os.path.join(parts["trace"], "trace.json"))
        doc["command"] += at
        write("decode-trace", doc)

    # gbbest: the same files under the replay's fastest setting (setting.txt), named with "-best".
    for part, extra in (("gb", ""), ("gbbest", "-best")):
        if part not in parts:
            continue
        d = parts[part]
        setting_file = os.path.join(d, "setting.txt")
        setting = open(setting_file).read().strip() + " " if os.path.exists(setting_file) else ""
        for stem in ("gpu-decode", "gpu-peer-hf", "gpu-serve-c64"):
            p = os.path.join(d, stem + ".json")
            if os.path.exists(p):
                doc = load(p)
                doc["command"] = setting + re.sub(r"/\S*/%s/" % part, "", doc["command"]) + at
                write(stem + extra, doc)
        summary = gb_summary(d, card, date, at)
        if summary is not None:
            summary["command"] = setting + summary["command"].replace("(part gb)", "(part %s)" % part)
            write("gpu-summary" + extra, summary)
    # grpo: one file per setting (grpo-graphs-SETTING.json); the defaults' keeps the plain name.
    if "grpo" in parts:
        for f in sorted(os.listdir(parts["grpo"])):
            m = re.fullmatch(r"grpo-graphs-(.+)\.json", f)
            if m is None:
                continue
            setting = m.group(1)
            doc = load(os.path.join(parts["grpo"], f))
            doc["command"] = re.sub(r"/\S*/grpo/", "", doc["command"]) + at
            if setting == "defaults":
                write("grpo-step-3b", doc)
            else:
                env = re.sub(r"_(\d+)$", r"=\1", setting)
                doc["command"] = env + " " + doc["command"]
                write("grpo-step-3b-" + re.sub(r"[^a-z0-9]+", "-", setting.lower()).strip("-"), doc)
    if not written:
        sys.exit("nothing to write: the archives held no figures")


if __name__ == "__main__":
    main()
