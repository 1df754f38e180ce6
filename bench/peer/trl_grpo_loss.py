#!/usr/bin/env python3
"""TRL's GRPO math in PyTorch, as the peer for src/train/grpo.ts.

Usage (bench/peer/grpo-cases.ts writes the cases and compares the results):
    node --import tsx bench/peer/grpo-cases.ts write DIR
    python3 bench/peer/trl_grpo_loss.py DIR        # reads DIR/grpo-cases.json, writes DIR/grpo-results.json
    node --import tsx bench/peer/grpo-cases.ts compare DIR

The computations follow GRPOTrainer in huggingface/trl 1.10.0.dev0 (commit f2cd577):
_compute_loss for the loss (token-level importance sampling, no delta, no entropy mask, no vLLM
correction, one process) and _generate_and_score_completions for the advantages
(multi_objective_aggregation="sum_then_normalize"). Gradients come from autograd. Everything
runs in float64 so that what is compared is the math, not float32 rounding. It needs only torch.
"""
import json
import math
import sys
from pathlib import Path

import torch

DTYPE = torch.float64


def nan_std(x, dim=None, keepdim=False):
    """Unbiased std ignoring NaNs; NaN where fewer than two values (as trl.trainer.utils.nanstd)."""
    mean = torch.nanmean(x, dim=dim, keepdim=True) if dim is not None else torch.nanmean(x)
    sq = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True) if dim is not None else torch.nanmean((x - mean) ** 2)
    valid = (~torch.isnan(x)).to(DTYPE)
    count = valid.sum(dim=dim, keepdim=True) if dim is not None else valid.sum()
    bessel = torch.where(count > 1, count / (count - 1), torch.full_like(sq, float("nan")))
    std = torch.sqrt(sq * bessel)
    if dim is not None and not keepdim:
        std = std.squeeze(dim)
    return std


def nan_min(x):
    kept = x[~torch.isnan(x)]
    return float("nan") if kept.numel() == 0 else kept.min().item()


def nan_max(x):
    kept = x[~torch.isnan(x)]
    return float("nan") if kept.numel() == 0 else kept.max().item()


def tensor(rows):
    """JSON rows to a float64 tensor; null stands for NaN (JSON has no NaN)."""
    return torch.tensor([[float("nan") if v is None else v for v in row] for row in rows], dtype=DTYPE)


def grpo_loss(case):
    logp = tensor(case["logp"]).requires_grad_(True)  # (B, T)
    mask = tensor(case["mask"])
    adv = torch.tensor(case["advantages"], dtype=DTYPE).unsqueeze(1)  # (B, 1)
    eps_low = case["epsilon"]
    eps_high = case["epsilon_high"] if case["epsilon_high"] is not None else eps_low
    beta = case["beta"]
    loss_type = case["loss_type"]
    accum = case["gradient_accumulation_steps"]

    # No old log-probs: the current ones, detached, so the ratio is 1 but still carries the gradient.
    old = tensor(case["old"]) if case["old"] is not None else logp.detach()
    ratio = torch.exp(logp - old)

    if beta != 0.0:
        ref = tensor(case["ref"])
        kl = torch.exp(ref - logp) - (ref - logp) - 1

    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if beta != 0.0:
        per_token = per_token + beta * kl

    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accum
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0) / accum
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * case["max_completion_length"]) / accum
    elif loss_type == "dapo":
        num_items = torch.tensor(float(case["num_items_in_batch"]), dtype=DTYPE).clamp(min=1.0)
        loss = (per_token * mask).sum() / num_items
    else:
        raise ValueError(f"unknown loss_type {loss_type}")
    loss.backward()

    def masked_mean(x):
        return ((x * mask).sum() / mask.sum().clamp(min=1.0)).item()

    def seq_mean(x):
        return (x * mask).sum(-1) / mask.sum(-1)  # NaN for empty sequences, as TRL

    r = ratio.detach()
    low = ((r < 1 - eps_low) & (adv < 0)).to(DTYPE)
    high = ((r > 1 + eps_high) & (adv > 0)).to(DTYPE)
    region = ((low + high) > 0).to(DTYPE)
    metrics = {
        "clip_ratio/low_mean": masked_mean(low),
        "clip_ratio/high_mean": masked_mean(high),
        "clip_ratio/region_mean": masked_mean(region),
        "clip_ratio/low_min": nan_min(seq_mean(low)),
        "clip_ratio/high_max": nan_max(seq_mean(high)),
    }
    if beta != 0.0:
        metrics["kl"] = masked_mean(kl.detach())
    return {"name": case["name"], "loss": loss.item(), "grad": logp.grad.tolist(), "metrics": metrics}


def advantages(case):
    per_func = tensor(case["rewards_per_func"])  # (N, K), NaN where a function gave None
    weights = torch.tensor(case["reward_weights"], dtype=DTYPE)
    G = case["num_generations"]
    scale = case["scale_rewards"]

    unscorable = torch.isnan(per_func).all(dim=1)
    rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = float("nan")
    group_mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G)
    if scale in ("group", "none"):
        std = nan_std(rewards.view(-1, G), dim=1).repeat_interleave(G) if G > 1 else torch.zeros_like(rewards)
    elif scale == "batch":
        std = nan_std(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    else:
        raise ValueError(f"unknown scale_rewards {scale}")
    adv = rewards - group_mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    zero_std = torch.isclose(std, torch.zeros_like(std))
    adv = torch.nan_to_num(adv, nan=0.0)

    metrics = {
        "reward": torch.nanmean(rewards).item(),
        "reward_std": nan_std(rewards).item(),
        "frac_reward_zero_std": zero_std.to(DTYPE).mean().item(),
    }
    for i, name in enumerate(case["func_names"]):
        metrics[f"rewards/{name}/mean"] = torch.nanmean(per_func[:, i]).item()
        metrics[f"rewards/{name}/std"] = nan_std(per_func[:, i]).item()
    return {"name": case["name"], "advantages": adv.tolist(), "metrics": metrics}


def json_safe(value):
    """NaN to null, recursively: JSON.parse rejects NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: trl_grpo_loss.py DIR  (DIR holds grpo-cases.json from grpo-cases.ts write)")
    folder = Path(sys.argv[1])
    cases = json.loads((folder / "grpo-cases.json").read_text())
    results = {
        "torch_version": torch.__version__,
        "loss_cases": [grpo_loss(c) for c in cases["loss_cases"]],
        "advantage_cases": [advantages(c) for c in cases["advantage_cases"]],
    }
    (folder / "grpo-results.json").write_text(json.dumps(json_safe(results)))
    print(f"wrote {folder / 'grpo-results.json'}: {len(results['loss_cases'])} loss cases, "
          f"{len(results['advantage_cases'])} advantage cases (torch {torch.__version__})")


if __name__ == "__main__":
    main()
