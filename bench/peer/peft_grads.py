"""LoRA gradients and logits, Tandem vs Python peft, on the same model, adapter and batch.
bench/peer/device-lora-peer.sh drives it; bench/peer/lora-grads.ts is the Tandem side.

  make: python3 bench/peer/peft_grads.py make --model MODEL_DIR --like ADAPTER_DIR --out DIR [--seed 0]
    A random peft LoRA with the r, lora_alpha, target_modules and use_rslora of ADAPTER_DIR's
    adapter_config.json, made by get_peft_model with init_lora_weights=False (so B != 0), and
    save_pretrained()d to DIR for Tandem to load.

  compare: python3 bench/peer/peft_grads.py compare --variant NAME=MODEL_DIR:WORK_DIR [...] --out RESULTS.json
    Per variant, WORK_DIR holds what lora-grads.ts wrote (batch.json, tandem-adapter/,
    tandem-grads.safetensors, tandem-logits.safetensors) plus peft-adapter/ (from make) and
    peft-adapter-tandem-logits.safetensors (Tandem's logits with it). For each variant:
      - transformers fp32 (eager attention) + PeftModel.from_pretrained(tandem-adapter, is_trainable=True);
        each sequence runs alone; logp_r = log_softmax(logits / T)[target]; loss = sum_r c_r logp_r;
        backward; every lora_A / lora_B gradient vs Tandem's: max|diff| / max|peft| per tensor;
      - the logits of the 3 sequences with that adapter vs Tandem's serving forward;
      - the logits with peft's own random adapter (peft-adapter/) vs Tandem's after loading it.
    Error = max|tandem - peft| / max|peft| (relative to the tensor's scale, so that near-zero
    entries do not blow it up). Exit status 1 if any error is 1e-4 or more, or if a check would
    prove nothing (an adapter that barely moves the logits, a gradient tensor of zeros).

  --device cuda runs torch on the GPU with TF32 off (fp32 matmuls in full precision); cpu is the default.
"""
import argparse
import datetime
import json
import math
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

BOUND = 1e-4
# An adapter whose logits differ from the base model's by less than this (relative) would let a
# Tandem that ignored it pass the logits checks.
MIN_ADAPTER_EFFECT = 1e-2


def load_base(model_dir: str, device: str):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    return model.to(device)


def rel_err(ours: torch.Tensor, peer: torch.Tensor) -> float:
    """max|ours - peer| / max|peer|, in float64."""
    if tuple(ours.shape) != tuple(peer.shape):
        raise SystemExit(f"shape mismatch: ours {tuple(ours.shape)}, peft {tuple(peer.shape)}")
    ours, peer = ours.double().cpu(), peer.double().cpu()
    scale = peer.abs().max().item()
    return (ours - peer).abs().max().item() / scale if scale > 0 else math.inf


def sequence_logits(model, tokens, device):
    return model(torch.tensor([tokens], device=device)).logits[0]


def make(args) -> int:
    with open(os.path.join(args.like, "adapter_config.json")) as f:
        like = json.load(f)
    torch.manual_seed(args.seed)
    config = LoraConfig(
        r=like["r"],
        lora_alpha=like["lora_alpha"],
        target_modules=like["target_modules"],
        use_rslora=like.get("use_rslora", False),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,
    )
    get_peft_model(load_base(args.model, "cpu"), config).save_pretrained(args.out)
    print(f"{args.out}: r={config.r} alpha={config.lora_alpha} rslora={config.use_rslora} targets={sorted(config.target_modules)}")
    return 0


def compare_variant(name: str, model_dir: str, work: str, device: str):
    """Returns (results entries, list of failures)."""
    with open(os.path.join(work, "batch.json")) as f:
        batch = json.load(f)
    temperature = batch["temperature"]
    seqs = batch["sequences"]
    coef = batch["coefficients"]
    failures = []
    results = []

    # Tandem -> peft: gradients, log-probs and logits with Tandem's adapter.
    model = PeftModel.from_pretrained(load_base(model_dir, device), os.path.join(work, "tandem-adapter"), is_trainable=True)
    model.eval()  # lora_dropout is 0; eval() only rules out any other training-mode behaviour
    scalings = {m.scaling["default"] for m in model.modules() if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict)}
    if scalings != {batch["tandem"]["scale"]}:
        failures.append(f"{name}: peft's scaling {scalings}, Tandem's {batch['tandem']['scale']}")
    ours_logits = load_file(os.path.join(work, "tandem-logits.safetensors"))
    loss = torch.zeros((), dtype=torch.float64, device=device)
    logps = []
    logits_err = 0.0
    r = 0
    for i, s in enumerate(seqs):
        tokens, start = s["tokens"], s["targetStart"]
        logits = sequence_logits(model, tokens, device)
        logits_err = max(logits_err, rel_err(ours_logits[f"seq{i}"], logits.detach()))
        # Row j - 1 predicts token j (TRL: logits / temperature, then log-softmax).
        rows = torch.log_softmax(logits[start - 1 : len(tokens) - 1] / temperature, dim=-1)
        logp = rows.gather(1, torch.tensor(tokens[start:], device=device).unsqueeze(1)).squeeze(1)
        c = torch.tensor(coef[r : r + len(logp)], dtype=torch.float32, device=device)
        loss = loss + (c * logp).sum().double()
        logps.append(logp.detach())
        r += len(logp)
    if r != len(coef):
        failures.append(f"{name}: {r} targets, {len(coef)} coefficients")
    loss.backward()

    theirs_logp = torch.cat(logps).double().cpu()
    ours_logp = torch.tensor(batch["tandem"]["logp"], dtype=torch.float64)
    logp_err = (ours_logp - theirs_logp).abs().max().item()
    loss_err = abs(batch["tandem"]["loss"] - loss.item()) / max(1.0, abs(loss.item()))

    ours_grads = load_file(os.path.join(work, "tandem-grads.safetensors"))
    seen = set()
    worst, worst_name = 0.0, ""
    diff_max, scale_max = 0.0, 0.0
    for pname, p in model.named_parameters():
        if "lora_" not in pname:
            continue
        key = pname.replace(".default.", ".")  # peft's saved names drop the adapter name
        seen.add(key)
        if p.grad is None:
            failures.append(f"{name}: peft has no gradient for {key}")
            continue
        if key not in ours_grads:
            failures.append(f"{name}: Tandem wrote no gradient for {key}")
            continue
        g = p.grad.detach().double().cpu()
        if g.abs().max().item() == 0:
            failures.append(f"{name}: {key}: peft's gradient is all zeros, so the check proves nothing")
        e = rel_err(ours_grads[key], g)
        if e > worst:
            worst, worst_name = e, key
        diff_max = max(diff_max, (ours_grads[key].double() - g).abs().max().item())
        scale_max = max(scale_max, g.abs().max().item())
    for key in ours_grads:
        if key not in seen:
            failures.append(f"{name}: Tandem wrote {key}, which peft does not train")
    with torch.no_grad(), model.disable_adapter():
        tandem_effect = min(rel_err(sequence_logits(model, s["tokens"], device), ours_logits[f"seq{i}"]) for i, s in enumerate(seqs))
    if tandem_effect < MIN_ADAPTER_EFFECT:
        failures.append(f"{name}: Tandem's adapter moves the logits by only {tandem_effect:.3e}")
    print(f"{name}: {len(seen)} LoRA tensors; worst gradient error {worst:.3e} ({worst_name}); "
          f"overall max|diff| / max|grad| {diff_max / scale_max:.3e}; loss {loss.item():.6f} (Tandem {batch['tandem']['loss']:.6f}); "
          f"max |logp diff| {logp_err:.3e}; logits with Tandem's adapter {logits_err:.3e} (it moves the base logits by {tandem_effect:.3e})")
    del model

    # peft -> Tandem: logits with peft's own random adapter, which Tandem loaded from disk.
    base = load_base(model_dir, device)
    peft_model = PeftModel.from_pretrained(base, os.path.join(work, "peft-adapter"))
    peft_model.eval()
    theirs_adapter_logits = load_file(os.path.join(work, "peft-adapter-tandem-logits.safetensors"))
    peft_logits_err = 0.0
    effect = math.inf
    with torch.no_grad():
        for i, s in enumerate(seqs):
            with_adapter = sequence_logits(peft_model, s["tokens"], device)
            peft_logits_err = max(peft_logits_err, rel_err(theirs_adapter_logits[f"seq{i}"], with_adapter))
            with peft_model.disable_adapter():
                plain = sequence_logits(peft_model, s["tokens"], device)
            effect = min(effect, rel_err(plain, with_adapter))
    print(f"{name}: logits with peft's adapter {peft_logits_err:.3e} (it moves the base logits by {effect:.3e})")
    if effect < MIN_ADAPTER_EFFECT:
        failures.append(f"{name}: peft's adapter moves the logits by only {effect:.3e}")

    checks = [
        (f"lora_grad_max_rel_err_{name}", worst, "ratio", f"worst of {len(seen)} lora_A/lora_B tensors: max|diff| / max|peft grad| ({worst_name})"),
        (f"lora_grad_overall_rel_err_{name}", diff_max / scale_max, "ratio", "max|diff| over all tensors / max|peft grad| over all tensors"),
        (f"loss_rel_err_{name}", loss_err, "ratio", "|loss diff| / max(1, |peft loss|), loss = sum c_r logp_r"),
        (f"logits_rel_err_tandem_adapter_{name}", logits_err, "ratio", "Tandem-saved adapter: Tandem serving forward vs peft, worst of 3 sequences"),
        (f"logits_rel_err_peft_adapter_{name}", peft_logits_err, "ratio", "peft-saved adapter loaded in Tandem vs peft, worst of 3 sequences"),
    ]
    for cname, value, unit, what in checks:
        results.append({"name": cname, "value": value, "unit": unit, "what": what})
        if not value < BOUND:
            failures.append(f"{cname} = {value:.3e} is not below {BOUND}")
    results.append({"name": f"logp_max_abs_err_{name}", "value": logp_err, "unit": "nat", "what": f"{len(coef)} target log-probs at T={temperature}"})
    for who, value in (("tandem", tandem_effect), ("peft", effect)):
        results.append({"name": f"{who}_adapter_effect_{name}", "value": value, "unit": "ratio",
                        "what": f"min over sequences of max|base logits - logits with {who}'s adapter| / max|with| "
                                f"(at least {MIN_ADAPTER_EFFECT}, or the logits check would prove nothing)"})
    return results, failures


def compare(args) -> int:
    device = args.device
    if device == "cuda":
        # fp32 in full precision: no TF32 in matmuls or convolutions.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    results, failures = [], []
    for spec in args.variant:
        name, rest = spec.split("=", 1)
        model_dir, work = rest.split(":", 1)
        r, f = compare_variant(name, model_dir, work, device)
        results += r
        failures += f
    import peft
    import transformers

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    where = f"torch on {card} in fp32 with TF32 off" if device == "cuda" else f"torch fp32 on the CPU of a {card} machine"
    doc = {
        "card": f"{card} ({where}; Tandem CPU backend fp32)",
        "date": datetime.date.today().isoformat(),
        "command": args.command,
        "peer": f"peft {peft.__version__}, transformers {transformers.__version__} (eager attention), torch {torch.__version__}",
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32} if device == "cuda" else None,
        "bound": BOUND,
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"{'check':<50} {'value':>10}")
    for e in results:
        print(f"{e['name']:<50} {e['value']:>10.3e}")
    for msg in failures:
        print("FAIL", msg)
    print("OK" if not failures else "FAILED")
    return 0 if not failures else 1


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--model", required=True)
    m.add_argument("--like", required=True, help="adapter dir whose r / alpha / targets / rslora to copy")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("--variant", action="append", required=True, help="NAME=MODEL_DIR:WORK_DIR")
    c.add_argument("--out", required=True)
    c.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    c.add_argument("--command", default=" ".join(sys.argv))
    args = ap.parse_args()
    sys.exit(make(args) if args.cmd == "make" else compare(args))


if __name__ == "__main__":
    main()
