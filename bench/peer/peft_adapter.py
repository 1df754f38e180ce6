"""LoRA adapters move both ways between Tandem and Python peft (run on the GPU machine: torch,
transformers, peft).

  check: python3 bench/peer/peft_adapter.py check --model MODEL_DIR --adapter TANDEM_ADAPTER_DIR [--scale S]
    Loads the base with transformers (fp32), applies the Tandem-saved adapter with
    PeftModel.from_pretrained, and checks that
      - peft created exactly the LoRA modules whose tensors the file holds (none missing, none extra),
      - every loaded lora_A / lora_B equals the file's tensor bit for bit,
      - peft's scaling equals --scale (Tandem's LoraAdapter.scale; without it, the rule
        alpha/r or alpha/sqrt(r) from adapter_config.json).
    Exit status 1 on any mismatch.

  make: python3 bench/peer/peft_adapter.py make --model MODEL_DIR --out DIR [--targets q_proj,v_proj] [--seed 0]
    Creates a random peft LoRA (r=8, alpha=16, init_lora_weights=False so that B != 0) and
    save_pretrained()s it to DIR for a Tandem test to load. Also writes DIR.expect.json (beside
    DIR, not in it) with peft's in-memory view: scaling, and per tensor its shape, sum and first
    values, so the Tandem side compares against peft's model rather than the file it reads.
    Prints DIR.

Logits with the adapter applied (both directions) and LoRA gradients vs peft: bench/peer/peft_grads.py.
"""
import argparse
import json
import math
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

def load_base(model_dir: str):
    return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)


def lora_modules(model):
    """PeftModel module name ("base_model.model.model.layers.0.self_attn.q_proj", the saved
    tensor names' stem once peft strips the adapter name) -> LoRA layer."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            out[name] = module
    return out


def check(args) -> int:
    with open(os.path.join(args.adapter, "adapter_config.json")) as f:
        cfg = json.load(f)
    file_tensors = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))
    model = PeftModel.from_pretrained(load_base(args.model), args.adapter)
    model.eval()
    modules = lora_modules(model)

    errors = []
    seen = set()
    for name, module in modules.items():
        for which in ("A", "B"):
            key = f"{name}.lora_{which}.weight"
            seen.add(key)
            if key not in file_tensors:
                errors.append(f"peft created {key}, which the file lacks")
                continue
            ours = file_tensors[key].to(torch.float32)
            theirs = getattr(module, f"lora_{which}")["default"].weight.detach().cpu()
            if theirs.dtype != torch.float32:
                errors.append(f"{key}: peft holds {theirs.dtype}, expected float32")
            if tuple(ours.shape) != tuple(theirs.shape):
                errors.append(f"{key}: shape {tuple(ours.shape)} in the file, {tuple(theirs.shape)} in peft")
            elif not torch.equal(ours, theirs.to(torch.float32)):
                diff = (ours - theirs.to(torch.float32)).abs().max().item()
                errors.append(f"{key}: values differ (max |diff| {diff:.3e})")
        scaling = module.scaling["default"]
        if args.scale is not None:
            want = args.scale
        else:
            want = cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])
        if scaling != want:
            errors.append(f"{name}: peft's scaling {scaling!r}, ours {want!r}")
    for key in file_tensors:
        if key not in seen:
            errors.append(f"the file holds {key}, which peft did not load into any module")

    print(f"peft check: {len(modules)} LoRA modules, {len(file_tensors)} tensors, "
          f"scaling {next(iter(modules.values())).scaling['default'] if modules else None}")
    for e in errors:
        print("MISMATCH", e)
    print("OK" if not errors and modules else "FAILED")
    return 0 if not errors and modules else 1


def make(args) -> int:
    torch.manual_seed(args.seed)
    targets = args.targets.split(",")
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,
    )
    model = get_peft_model(load_base(args.model), config)
    model.save_pretrained(args.out)

    expect = {"targets": sorted(targets), "r": 8, "lora_alpha": 16, "tensors": {}}
    scalings = set()
    for name, module in lora_modules(model).items():
        scalings.add(module.scaling["default"])
        for which in ("A", "B"):
            w = getattr(module, f"lora_{which}")["default"].weight.detach().cpu().to(torch.float32)
            expect["tensors"][f"{name}.lora_{which}.weight"] = {
                "shape": list(w.shape),
                "sum": float(w.double().sum()),
                "first": [float(x) for x in w.flatten()[:8]],
            }
    if len(scalings) != 1:
        raise SystemExit(f"expected one scaling for all modules, found {scalings}")
    expect["scaling"] = scalings.pop()
    with open(f"{args.out.rstrip('/')}.expect.json", "w") as f:
        json.dump(expect, f, indent=2)
    print(args.out)
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--adapter", required=True)
    c.add_argument("--scale", type=float, default=None)
    m = sub.add_parser("make")
    m.add_argument("--model", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    m.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.exit(check(args) if args.cmd == "check" else make(args))


if __name__ == "__main__":
    main()
