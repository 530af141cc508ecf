"""Issue 11's long run: the .dlc and lossless parsers fuzzed (>= 100k generated inputs each) and
the crash corpus repeated with fresh images, every harm and real kills, counting trials, inputs,
failures and originals lost (which must be 0). The default test run does a short variant of
both (tests/test_container.py, tests/test_lossless.py, tests/work/test_invariant.py).

Resumable: every finished chunk is one JSON line in ``--log``; a rerun skips the chunks there.
Run it niced, in the background::

    nice -n 19 python bench/fuzz_faults.py parsers --inputs 1000000 --log runs/fuzz.jsonl
    nice -n 19 python bench/fuzz_faults.py faults --rounds 4 --kill-every 5 --log runs/faults.jsonl
    nice -n 19 python bench/fuzz_faults.py races --rounds 20 --kill-every 5 --log runs/races.jsonl
    python bench/fuzz_faults.py summary --log runs/fuzz.jsonl --log runs/faults.jsonl --log runs/races.jsonl [--json]

``races`` (issue 22 F1): the user changes the original's name while archiver removes it, at each
point of the removal (after the commit, after every slow check, after the original was taken)
and in each way (rename over, rewrite in place with and without the old mtime, a writer holding
it open, a symlink, a delete), for every kind of file; every Nth trial instead kills the run -9
right after taking, and the user's change comes before the next run. A race loses data when the
original or the user's newest file is neither on disk nor restorable, or an original is left
under a private name.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # fuzzing.py and faultcorpus.py: the corpus, one home

CHUNK = 20_000


def _done(log: Path) -> set[tuple]:
    out = set()
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                if d["part"] == "parsers":
                    out.add(("parsers", d["target"], d["chunk"]))
                elif d["part"] == "races":
                    out.add(("races", d["round"], d["case"]))
                else:
                    out.add(("faults", d["round"], d["case"]))
    return out


def _append(log: Path, rec: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def parsers(args) -> None:
    import fuzzing

    done = _done(args.log)
    for target in args.targets:
        for chunk in range((args.inputs + CHUNK - 1) // CHUNK):
            if ("parsers", target, chunk) in done:
                continue
            n = min(CHUNK, args.inputs - chunk * CHUNK)
            t = time.time()
            rep = fuzzing.TARGETS[target](n, seed=1_000_003 * (chunk + 1))
            _append(args.log, {"part": "parsers", "target": target, "chunk": chunk, "inputs": rep["inputs"],
                               "documented_errors": rep["documented_errors"], "accepted": rep["accepted"],
                               "other": rep["other"], "wrong": rep["wrong"][:5], "wrong_count": len(rep["wrong"]),
                               "seconds": round(time.time() - t, 2)})
            print(f"{target} chunk {chunk}: {rep['inputs']} inputs, {len(rep['other'])} other exceptions, "
                  f"{len(rep['wrong'])} wrong results", flush=True)


def faults(args) -> None:
    import faultcorpus

    done = _done(args.log)
    cases = faultcorpus.cases()
    k = 0
    for rnd in range(args.rounds):
        for kind, step, harm in cases:
            k += 1
            case = f"{kind}-{step}-{harm}"
            if ("faults", rnd, case) in done:
                continue
            kill = args.kill_every and k % args.kill_every == 0
            crash = faultcorpus.crash_kill9 if kill else faultcorpus.crash_in_process
            t = time.time()
            with tempfile.TemporaryDirectory(prefix="fuzz_faults_") as d:
                try:
                    r = faultcorpus.trial(Path(d), kind, step, harm, crash=crash, seed=rnd * 7919 + k)
                    r["failure"] = None
                except Exception as e:  # noqa: BLE001 - a trial that cannot finish is a failure, counted
                    r = {"kind": kind, "step": step, "harm": harm, "lost": None, "failure": f"{type(e).__name__}: {e}"}
            r.update(part="faults", round=rnd, case=case, crash="kill9" if kill else "in-process",
                     seconds=round(time.time() - t, 2))
            _append(args.log, r)
            if r.get("lost") or r.get("failure") or (r.get("present_after_crash") and r.get("problems")):
                print(f"round {rnd} {case}: {r}", flush=True)
        print(f"round {rnd} done", flush=True)


def races(args) -> None:
    import faultcorpus

    done = _done(args.log)
    cases = faultcorpus.race_cases()
    k = 0
    for rnd in range(args.rounds):
        for kind, point, race in cases:
            k += 1
            kill = bool(args.kill_every and k % args.kill_every == 0)
            case = f"{kind}-{'kill9' if kill else point}-{race}"
            if ("races", rnd, case) in done:
                continue
            t = time.time()
            with tempfile.TemporaryDirectory(prefix="fuzz_races_") as d:
                try:
                    r = faultcorpus.race_trial(Path(d), kind, point, race, kill=kill, seed=rnd * 7919 + k)
                    r["failure"] = None
                except Exception as e:  # noqa: BLE001 - a trial that cannot finish is a failure, counted
                    r = {"kind": kind, "point": point, "race": race, "lost": None, "failure": f"{type(e).__name__}: {e}"}
            r.update(part="races", round=rnd, case=case, crash="kill9" if kill else "in-process",
                     seconds=round(time.time() - t, 2))
            _append(args.log, r)
            if r.get("lost") or r.get("failure"):
                print(f"round {rnd} {case}: {r}", flush=True)
        print(f"round {rnd} done", flush=True)


def summary(args) -> dict:
    recs = [json.loads(line) for log in args.log for line in Path(log).read_text().splitlines() if line.strip()]
    p = [r for r in recs if r["part"] == "parsers"]
    f = [r for r in recs if r["part"] == "faults"]
    rc = [r for r in recs if r["part"] == "races"]
    out = {"parsers": {}, "faults": {}, "races": {}}
    for target in sorted({r["target"] for r in p}):
        rs = [r for r in p if r["target"] == target]
        out["parsers"][target] = {
            "inputs": sum(r["inputs"] for r in rs), "documented_errors": sum(r["documented_errors"] for r in rs),
            "accepted": sum(r["accepted"] for r in rs),
            "other_exceptions": sum(len(r["other"]) for r in rs), "wrong_results": sum(r["wrong_count"] for r in rs),
            "seconds": round(sum(r["seconds"] for r in rs), 1)}
    if f:
        out["faults"] = {
            "trials": len(f), "kill9": sum(r["crash"] == "kill9" for r in f),
            "artifact_harmed": sum(bool(r.get("harmed")) for r in f),
            "failures": sum(bool(r.get("failure")) for r in f),
            "catalog_disagrees": sum(bool(r.get("present_after_crash") and r.get("problems")) for r in f),
            "originals_lost": sum(bool(r.get("lost")) for r in f),
            "harm_after_verified_removal_reported": sum(bool(not r.get("present_after_crash") and r.get("harmed")
                                                            and r.get("problems")) for r in f),
            "seconds": round(sum(r["seconds"] for r in f), 1)}
    if rc:
        out["races"] = {
            "trials": len(rc), "kill9": sum(r["crash"] == "kill9" for r in rc),
            "by_race": {race: sum(r.get("race") == race for r in rc) for race in sorted({r.get("race") for r in rc})},
            "failures": sum(bool(r.get("failure")) for r in rc),
            "originals_lost": sum(r.get("original_kept") is False for r in rc),
            "user_files_lost": sum(r.get("user_kept") is False for r in rc),
            "left_taken": sum(bool(r.get("taken_left")) for r in rc),
            "seconds": round(sum(r["seconds"] for r in rc), 1)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for target, s in out["parsers"].items():
            print(f"parser {target}: {s['inputs']} inputs, {s['documented_errors']} documented errors, "
                  f"{s['accepted']} accepted, {s['other_exceptions']} other exceptions, "
                  f"{s['wrong_results']} wrong results ({s['seconds']} s)")
        if f:
            s = out["faults"]
            print(f"faults: {s['trials']} trials ({s['kill9']} real kill -9), {s['artifact_harmed']} with the artifact "
                  f"harmed, {s['failures']} failures, {s['catalog_disagrees']} catalog/disk disagreements, "
                  f"{s['originals_lost']} originals lost; {s['harm_after_verified_removal_reported']} harms after a "
                  f"verified removal reported by the check ({s['seconds']} s)")
        if rc:
            s = out["races"]
            print(f"races: {s['trials']} trials ({s['kill9']} real kill -9), {s['failures']} failures, "
                  f"{s['originals_lost']} originals lost, {s['user_files_lost']} user files lost, "
                  f"{s['left_taken']} left taken ({s['seconds']} s)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("parsers", help="fuzz the .dlc and lossless parsers")
    a.add_argument("--inputs", type=int, default=100_000, help="inputs per parser (default 100000)")
    a.add_argument("--targets", nargs="+", default=["dlc", "lossless"], choices=["dlc", "lossless"])
    a.add_argument("--log", type=Path, required=True)
    b = sub.add_parser("faults", help="the crash corpus: every kind, step and harm, per round")
    b.add_argument("--rounds", type=int, default=1)
    b.add_argument("--kill-every", type=int, default=5, help="every Nth trial is a real kill -9 (0: none)")
    b.add_argument("--log", type=Path, required=True)
    r = sub.add_parser("races", help="the user changes the original's name while archiver removes it")
    r.add_argument("--rounds", type=int, default=1)
    r.add_argument("--kill-every", type=int, default=5, help="every Nth trial is a real kill -9 after taking (0: none)")
    r.add_argument("--log", type=Path, required=True)
    c = sub.add_parser("summary", help="counts over one or more logs")
    c.add_argument("--log", action="append", required=True)
    c.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "summary":
        s = summary(args)
        bad = any(v["other_exceptions"] or v["wrong_results"] for v in s["parsers"].values()) or \
            bool(s["faults"] and (s["faults"]["originals_lost"] or s["faults"]["failures"])) or \
            bool(s["races"] and (s["races"]["originals_lost"] or s["races"]["user_files_lost"] or s["races"]["failures"]
                                 or s["races"]["left_taken"]))
        return 1 if bad else 0
    {"parsers": parsers, "faults": faults, "races": races}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
