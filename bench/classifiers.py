#!/usr/bin/env python
"""Measure the policy classifiers on the shared data set.

    python bench/classifiers.py [--data ../shared/data] [--policy FILE] [--json OUT.json] [--threads 2]

- classify/faces and classify/text: every image must be protected (no diffusion among the
  decision's codecs: ``Decision.protected``);
  reports that recall, and the recall of the matching detector alone (faces.found / text.found).
- negatives: people-free, text-free photos from train/ (bench/negatives.txt, judged by eye): at
  most 10% should be protected; reports the share protected, by rule, and the detectors' false
  hits, separately for the ImageNet part (where the face thresholds were checked) and the BSDS
  part (held out).
- kodak/ (evaluation only, never tuned on): the images without people (list below, judged by eye)
  should mostly be eligible for diffusion; Kodak images with people should be protected.
- the text classifier alone on bench/text_labels.json (ImageNet sample photos labelled by eye:
  readable, often stylised or curved text vs text-free texture photos): recall and false finds
  per split ('dev' chose the detector's settings, 'held_out' did not), and its time per image.
- time per megapixel of the policy decision (lazy: only the classifiers needed) and of running
  all classifiers, after a warm-up (model loading is reported separately).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

#: Kodak images with people in them, by looking (see docs/policies.md)
KODAK_PEOPLE = {"kodim04", "kodim05", "kodim10", "kodim12", "kodim14", "kodim15", "kodim17", "kodim18"}
#: people-free Kodak images with legible text (script "Bahamas" on a cap, boat name, shop sign, sail
#: number): protecting them is right
KODAK_TEXT = {"kodim03", "kodim06", "kodim08", "kodim09"}
#: people-free, text-free photos from train/, one path (relative to the data folder) a line
NEGATIVES = Path(__file__).resolve().parent / "negatives.txt"
#: text / no-text labels for ImageNet sample photos, with a dev / held_out split
TEXT_LABELS = Path(__file__).resolve().parent / "text_labels.json"


def negatives(data: Path) -> list[Path]:
    lines = [ln.strip() for ln in NEGATIVES.read_text().splitlines()]
    return [data / ln for ln in lines if ln and not ln.startswith("#")]


def text_labelled(data: Path, run_classifier, Subject, load_image, limit: int = 0) -> dict:
    """The text classifier alone on bench/text_labels.json: recall, false finds, time, per split."""
    labels = json.loads(TEXT_LABELS.read_text())["images"]
    names = sorted(labels)[:limit] if limit else sorted(labels)
    out: dict = {}
    for name in names:
        lab = labels[name]
        img = load_image(data / "train" / "imagenet-sample" / name)
        r = run_classifier("text", Subject(None, img))
        part = out.setdefault(lab["split"], {"text": 0, "found": 0, "text_free": 0, "false_finds": 0, "missed": [], "false_found": [], "seconds": 0.0, "megapixels": 0.0, "images": 0})
        part["images"] += 1
        part["seconds"] += r.seconds
        part["megapixels"] += img.megapixels
        if lab["text"]:
            part["text"] += 1
            part["found"] += r.found
            if not r.found:
                part["missed"].append(name)
        else:
            part["text_free"] += 1
            part["false_finds"] += r.found
            if r.found:
                part["false_found"].append(name)
        print(f"labelled {lab['split']:8} {name:40} text={lab['text']!s:5} found={r.found!s:5} {r.seconds:6.3f}s  {r.reason[:90]}", file=sys.stderr)
    for part in out.values():
        part["recall"] = round(part["found"] / max(1, part["text"]), 4)
        part["false_find_rate"] = round(part["false_finds"] / max(1, part["text_free"]), 4)
        part["ms_per_image"] = round(1000 * part.pop("seconds") / max(1, part["images"]), 1)
        part["megapixels"] = round(part["megapixels"] / max(1, part["images"]), 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parent.parent
    ap.add_argument("--data", default=str(root.parent / "shared" / "data"))
    ap.add_argument("--policy", default=None)
    ap.add_argument("--json", dest="json_out", default=None, help="write per-image results here")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for OpenCV / onnxruntime")
    ap.add_argument("--limit", type=int, default=0, help="at most N images per set (quick look)")
    ap.add_argument("--bsds", type=int, default=200, help="natural JPEG photos (BSDS500 test) for the graphics false-positive rate")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import cv2

    cv2.setNumThreads(args.threads)
    from archiver.imageio import load_image
    from archiver.policy import load_policy
    from archiver.policy.classifiers import NAMES, run_classifier
    from archiver.policy.subject import Subject

    data = Path(args.data)
    if not (data / "kodak").is_dir():
        print(f"shared data not found at {data}; pass --data", file=sys.stderr)
        return 2
    policy = load_policy(args.policy)
    sets = {
        "faces": sorted((data / "classify" / "faces").glob("*")),
        "text": sorted((data / "classify" / "text").glob("*")),
        "kodak": sorted((data / "kodak").glob("*.png")),
        "negatives": negatives(data),
    }
    if args.limit:
        sets = {k: v[: args.limit] for k, v in sets.items()}

    # warm-up: load the models once (reported, not counted per image)
    t0 = time.perf_counter()
    warm = Subject(sets["kodak"][0])
    for n in NAMES:
        run_classifier(n, warm)
    warmup = time.perf_counter() - t0

    rows = []
    for set_name, files in sets.items():
        for f in files:
            img = load_image(f)  # decoding is the caller's cost, not the classifiers'
            mp = img.megapixels
            t, c = time.perf_counter(), time.process_time()
            d = policy.decide(f, img)
            lazy, lazy_cpu = time.perf_counter() - t, time.process_time() - c
            results = dict(d.evidence)
            for n in NAMES:
                if n not in results:
                    results[n] = run_classifier(n, Subject(f, img))
            rows.append({
                "set": set_name,
                "file": f.name,
                "part": "bsds" if "bsds500" in f.parts else "imagenet" if "imagenet-sample" in f.parts else "",
                "megapixels": round(mp, 3),
                "action": d.action,
                "protected": d.protected,
                "rule": d.rule,
                "policy_seconds": round(lazy, 4),
                "policy_cpu_seconds": round(lazy_cpu, 4),
                "all_seconds": round(sum(r.seconds for r in results.values()), 4),
                **{f"{n}_found": bool(results[n].found) for n in NAMES},
                **{f"{n}_score": round(float(results[n].score), 3) for n in NAMES},
                "graphics": bool(results["texture"].details.get("graphics")),
                **{f"{n}_seconds": round(results[n].seconds, 4) for n in NAMES},
                "reason": d.reasons[0],
            })
            print(f"{set_name:6} {f.name:22} {d.action:9} {d.rule:15} {lazy:6.3f}s  {d.reasons[0][:110]}", file=sys.stderr)

    def share(rs, key):
        return sum(1 for r in rs if key(r)) / len(rs) if rs else float("nan")

    # natural JPEG photos (BSDS500 test): how many does the cheap texture statistic call graphics?
    bsds = sorted((data / "train" / "bsds500" / "test").glob("*.jpg"))[: args.bsds]
    bsds_graphics = []
    for f in bsds:
        r = run_classifier("texture", Subject(f))
        if r.details.get("graphics"):
            bsds_graphics.append(f.name)

    faces = [r for r in rows if r["set"] == "faces"]
    text = [r for r in rows if r["set"] == "text"]
    kodak = [r for r in rows if r["set"] == "kodak"]
    people = [r for r in kodak if r["file"].split(".")[0] in KODAK_PEOPLE]
    eligible = [r for r in kodak if r["file"].split(".")[0] not in KODAK_PEOPLE]
    neg = [r for r in rows if r["set"] == "negatives"]
    total_mp = sum(r["megapixels"] for r in rows)

    def negative_summary(rs):
        prot = [r for r in rs if r["protected"]]
        by_rule: dict[str, int] = {}
        for r in prot:
            by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + 1
        return {
            "photos": len(rs),
            "protected": round(share(rs, lambda r: r["protected"]), 4),
            "protected_by_rule": by_rule,
            "protected_files": {r["file"]: r["rule"] for r in prot},
            "face_false_positives": [r["file"] for r in rs if r["faces_found"]],
            "text_false_positives": [r["file"] for r in rs if r["text_found"]],
        }

    summary = {
        "policy": policy.name,
        "images": len(rows),
        "faces_protected_recall": share(faces, lambda r: r["protected"]),
        "faces_detector_recall": share(faces, lambda r: r["faces_found"]),
        "text_protected_recall": share(text, lambda r: r["protected"]),
        "text_detector_recall": share(text, lambda r: r["text_found"]),
        "negatives": negative_summary(neg),
        "negatives_imagenet_tuning": negative_summary([r for r in neg if r["part"] == "imagenet"]),
        "negatives_bsds_held_out": negative_summary([r for r in neg if r["part"] == "bsds"]),
        "kodak_people_protected": share(people, lambda r: r["protected"]),
        "kodak_people_face_found": share(people, lambda r: r["faces_found"]),
        "kodak_eligible_protected": share(eligible, lambda r: r["protected"]),
        "kodak_eligible_wrongly_protected": share(
            eligible, lambda r: r["protected"] and r["file"].split(".")[0] not in KODAK_TEXT
        ),
        "kodak_eligible_protected_files": {r["file"]: r["rule"] for r in eligible if r["protected"]},
        "kodak_eligible_face_false_positives": [r["file"] for r in eligible if r["faces_found"]],
        "kodak_people_missed": [r["file"] for r in people if not r["protected"]],
        "bsds_natural_photos": len(bsds),
        "bsds_called_graphics": len(bsds_graphics) / max(1, len(bsds)),
        "bsds_called_graphics_files": bsds_graphics,
        "policy_seconds_per_mp": sum(r["policy_seconds"] for r in rows) / total_mp,
        "policy_cpu_seconds_per_mp": sum(r["policy_cpu_seconds"] for r in rows) / total_mp,
        "kodak_policy_seconds_per_image": sum(r["policy_seconds"] for r in kodak) / max(1, len(kodak)),
        "load_average_1min": os.getloadavg()[0],
        "all_classifiers_seconds_per_mp": sum(r["all_seconds"] for r in rows) / total_mp,
        "per_classifier_seconds_per_mp": {n: sum(r[f"{n}_seconds"] for r in rows) / total_mp for n in NAMES},
        "kodak_policy_seconds_per_mp": sum(r["policy_seconds"] for r in kodak) / sum(r["megapixels"] for r in kodak),
        "kodak_policy_cpu_seconds_per_mp": sum(r["policy_cpu_seconds"] for r in kodak) / sum(r["megapixels"] for r in kodak),
        "warmup_seconds": round(warmup, 2),
        "threads": args.threads,
    }
    summary["text_labelled"] = text_labelled(data, run_classifier, Subject, load_image, args.limit)
    summary["kodak_text_found"] = sorted(r["file"] for r in kodak if r["text_found"])
    summary["kodak_text_ms_per_image"] = round(1000 * sum(r["text_seconds"] for r in kodak) / max(1, len(kodak)), 1)
    summary = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}
    summary["per_classifier_seconds_per_mp"] = {k: round(v, 4) for k, v in summary["per_classifier_seconds_per_mp"].items()}
    print(json.dumps(summary, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
