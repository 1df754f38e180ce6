"""Parity: Tandem's CPU logits vs Hugging Face transformers' fp32 logits on the same checkpoint.

Usage: python3 bench/peer/hf_logits.py --model NAME=DIR --ours DIR_OF_NPY --prompts FILE --out RESULTS.json
  DIR_OF_NPY holds <NAME>.<i>.npy written by `tandem logits` for prompt i of FILE (one
  comma-separated id list per line). The error of a prompt is max|ours - hf| / max|hf| over
  all positions and vocabulary entries (relative to the logits' scale, so near-zero entries
  do not blow it up); each model's figure is the worst prompt.
"""
import argparse
import datetime
import json
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--ours", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default=" ".join(sys.argv))
    args = ap.parse_args()

    prompts = [[int(t) for t in line.split(",")] for line in open(args.prompts) if line.strip()]
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    results = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
        model.eval()
        worst = 0.0
        worst_abs = 0.0
        for i, ids in enumerate(prompts):
            with torch.no_grad():
                hf = model(torch.tensor([ids])).logits[0].double().numpy()
            ours = np.load(f"{args.ours}/{name}.{i}.npy").astype(np.float64)
            if ours.shape != hf.shape:
                raise SystemExit(f"{name} prompt {i}: our logits are {ours.shape}, transformers' {hf.shape}")
            diff = np.abs(ours - hf).max()
            rel = diff / np.abs(hf).max()
            print(f"{name} prompt {i} ({len(ids)} tokens): max|diff| {diff:.3e}, max|hf| {np.abs(hf).max():.3f}, rel {rel:.3e}")
            worst = max(worst, rel)
            worst_abs = max(worst_abs, diff)
        results.append({"name": f"logits_max_rel_err_{name}", "value": float(worst), "unit": "ratio"})
        results.append({"name": f"logits_max_abs_err_{name}", "value": float(worst_abs), "unit": "logit"})
    doc = {
        "card": f"{card} (transformers fp32 on CPU; Tandem CPU backend)",
        "date": datetime.date.today().isoformat(),
        "command": args.command,
        "torch": torch.__version__,
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
