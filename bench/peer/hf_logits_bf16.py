"""bf16 logits parity: Tandem (bf16 weights/activations, f32 accumulation and logits) against
transformers in bf16 and against transformers in fp32, the truth both bf16 pipelines approximate.

  dump:    python3 bench/peer/hf_logits_bf16.py dump --model NAME=DIR ... --prompts FILE --out DIR
           writes DIR/NAME.<i>.fp32.npy (fp32 weights upcast from the checkpoint's bf16, eager
           attention, TF32 off) and DIR/NAME.<i>.bf16.npy (bf16, sdpa attention: what
           `from_pretrained(dtype=torch.bfloat16)` runs by default) for prompt i of FILE.
  compare: python3 bench/peer/hf_logits_bf16.py compare --model NAME ... --hf DIR --ours DIR --prompts FILE
           --out RESULTS.json --card CARD --command CMD
           reads our DIR/NAME.<i>{,.step,.packed}.npy (bench/peer/logits-runs.ts) and writes the results.

Error of a prompt: max|x - ref| / max|ref| over all positions and vocabulary entries (relative to
the logits' scale); a model's figure is its worst prompt. Top-1 agreement: the fraction of all
positions of all prompts whose argmax equals the reference's.

Bound (why): both bf16 pipelines round the same bf16 weights and round activations to bf16 at
similar points, so their distance from fp32 should be of the same size; Tandem passes when its
error vs fp32 is at most BOUND_FACTOR x transformers-bf16's on the same prompts, and its top-1
agreement with fp32 is no more than top1_slack below transformers-bf16's (near-ties flip either way).
"""
import argparse
import datetime
import json
import os
import sys

import numpy as np

BOUND_FACTOR = 2.0
# Top-1 slack: three standard deviations of the difference of two binomial flip counts at
# transformers-bf16's flip rate p over n positions (near-ties flip at random in either pipeline),
# and at least 1%.
def top1_slack(p: float, n: int) -> float:
    return max(0.01, 3 * (2 * p * (1 - p) / n) ** 0.5)
OUR_PATHS = {"prefill": "", "decode": ".step", "packed": ".packed"}


def read_prompts(path: str) -> list[list[int]]:
    return [[int(t) for t in line.split(",")] for line in open(path) if line.strip()]


def dump(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference must be real fp32
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompts = read_prompts(args.prompts)
    os.makedirs(args.out, exist_ok=True)
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    for spec in args.model:
        name, path = spec.split("=", 1)
        for tag, dtype, attn in (("fp32", torch.float32, "eager"), ("bf16", torch.bfloat16, "sdpa")):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn, device_map=device).eval()
            meta[f"{name}.{tag}"] = {"dtype": str(dtype), "attn": model.config._attn_implementation}
            for i, ids in enumerate(prompts):
                with torch.no_grad():
                    logits = model(torch.tensor([ids], device=device)).logits[0]
                np.save(f"{args.out}/{name}.{i}.{tag}.npy", logits.float().cpu().numpy())
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
        print(f"hf {name}: fp32 eager + bf16 sdpa logits of {len(prompts)} prompts on {device}", flush=True)
    import transformers

    meta["transformers"] = transformers.__version__
    with open(f"{args.out}/meta.json", "w") as f:
        json.dump(meta, f)


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(x - ref).max() / np.abs(ref).max())


def compare(args: argparse.Namespace) -> None:
    prompts = read_prompts(args.prompts)
    meta = json.load(open(f"{args.hf}/meta.json"))
    results, checks, rows = [], [], []
    for name in args.model:
        rel = {k: 0.0 for k in ("hf", "hf_vs_ours", *OUR_PATHS)}
        agree = {k: 0 for k in ("hf", "hf_vs_ours", *OUR_PATHS)}
        positions = 0
        for i, ids in enumerate(prompts):
            truth = np.load(f"{args.hf}/{name}.{i}.fp32.npy").astype(np.float64)
            hf = np.load(f"{args.hf}/{name}.{i}.bf16.npy").astype(np.float64)
            top = truth.argmax(-1)
            positions += len(ids)
            rel["hf"] = max(rel["hf"], rel_err(hf, truth))
            agree["hf"] += int((hf.argmax(-1) == top).sum())
            for path, suffix in OUR_PATHS.items():
                ours = np.load(f"{args.ours}/{name}.{i}{suffix}.npy").astype(np.float64)
                if ours.shape != truth.shape:
                    sys.exit(f"{name} prompt {i} ({path}): our logits are {ours.shape}, transformers' {truth.shape}")
                rel[path] = max(rel[path], rel_err(ours, truth))
                agree[path] += int((ours.argmax(-1) == top).sum())
                if path == "prefill":
                    rel["hf_vs_ours"] = max(rel["hf_vs_ours"], rel_err(ours, hf))
                    agree["hf_vs_ours"] += int((ours.argmax(-1) == hf.argmax(-1)).sum())
        top1 = {k: v / positions for k, v in agree.items()}
        for path in OUR_PATHS:
            suffix = "" if path == "prefill" else f"_{path}"
            results.append({"name": f"logits_rel_err_vs_fp32_{name}{suffix}", "value": rel[path], "unit": "ratio", "peer": rel["hf"]})
            results.append({"name": f"top1_agreement_vs_fp32_{name}{suffix}", "value": top1[path], "unit": "fraction", "peer": top1["hf"]})
            slack = top1_slack(1 - top1["hf"], positions)
            ok = rel[path] <= BOUND_FACTOR * rel["hf"] and top1[path] >= top1["hf"] - slack
            checks.append({"name": f"{name}{suffix}", "pass": bool(ok)})
        results.append({"name": f"logits_rel_err_vs_hf_bf16_{name}", "value": rel["hf_vs_ours"], "unit": "ratio"})
        results.append({"name": f"top1_agreement_vs_hf_bf16_{name}", "value": top1["hf_vs_ours"], "unit": "fraction"})
        rows.append((name, positions, rel, top1))

    print(f"{'variant':<14}{'pos':>5}  {'rel err vs fp32: tandem prefill / decode / packed | HF bf16':<58}"
          f"  {'top-1 vs fp32: tandem / HF bf16':<32}{'tandem vs HF bf16 (rel, top-1)'}")
    for name, n, rel, top1 in rows:
        print(f"{name:<14}{n:>5}  {rel['prefill']:.2e} / {rel['decode']:.2e} / {rel['packed']:.2e} | {rel['hf']:.2e}"
              f"{'':<13}  {top1['prefill']:.3f} / {top1['hf']:.3f}{'':<17}{rel['hf_vs_ours']:.2e}, {top1['hf_vs_ours']:.3f}")
    failed = [c["name"] for c in checks if not c["pass"]]
    print(f"bound: tandem rel err <= {BOUND_FACTOR} x HF bf16's and top-1 >= HF bf16's - 3 sigma (>= 0.01): "
          + ("all pass" if not failed else f"FAIL {', '.join(failed)}"))
    doc = {
        "card": args.card,
        "date": datetime.date.today().isoformat(),
        "command": args.command,
        "peer": f"transformers {meta.get('transformers')} bf16 ({meta.get(args.model[0] + '.bf16', {}).get('attn')} attention), "
                f"torch {meta.get('torch')}; truth: transformers fp32 eager, TF32 off, same device",
        "bound": f"value <= {BOUND_FACTOR} x peer for rel err; for top-1 value >= peer - max(0.01, 3 sqrt(2 p (1 - p) / n)), "
                 "p = 1 - peer, n = positions",
        "prompt_lengths": [len(p) for p in prompts],
        "results": results,
        "checks": checks,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    sys.exit(1 if failed else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--model", action="append", required=True, help="NAME=DIR")
    d.add_argument("--prompts", required=True)
    d.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--model", action="append", required=True, help="NAME")
    c.add_argument("--hf", required=True)
    c.add_argument("--ours", required=True)
    c.add_argument("--prompts", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--card", required=True)
    c.add_argument("--command", default=" ".join(sys.argv))
    args = ap.parse_args()
    dump(args) if args.cmd == "dump" else compare(args)


if __name__ == "__main__":
    main()
