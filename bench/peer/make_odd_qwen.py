"""Write a small random Qwen2 model directory of any head layout, for bf16 logits parity.

    python3 bench/peer/make_odd_qwen.py --out DIR --hidden 896 --heads 14 --kv-heads 2 [--head-dim 64]
        [--layers 4] [--intermediate 2432] [--vocab 2048] [--untied] [--seed 0]

`tandem make-model` has fixed head counts per preset; this covers layouts it cannot write, such as
Qwen2.5-0.5B's GQA 7:1 (14 query heads, 2 KV heads of 64). Built with transformers' own Qwen2Config /
Qwen2ForCausalLM and save_pretrained (bf16), with the tokenizer of models/tandem-small.

Weights are drawn like make-model's, not with Qwen2's 0.02 initializer: each matrix has std
1/sqrt(fan_in), so activations keep unit size through the layers and attention scores are spread
out (with std 0.02 every head would attend almost uniformly and the attention path would be
barely tested); embedding/head rows have std 2/sqrt(hidden), giving logits of std ~2.
"""
import argparse
import os
import shutil
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", "..", "models", "tandem-small"))
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]


def positive(name: str, value: int) -> int:
    if value <= 0:
        sys.exit(f"--{name} must be > 0, got {value}")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--kv-heads", type=int, required=True)
    ap.add_argument("--head-dim", type=int, default=None, help="default hidden / heads")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=None, help="default about 2.7 x hidden")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name in ("hidden", "heads", "kv_heads", "layers", "vocab"):
        positive(name.replace("_", "-"), getattr(args, name))
    if args.heads % args.kv_heads != 0:
        sys.exit(f"--kv-heads {args.kv_heads} must divide --heads {args.heads}")
    head_dim = args.head_dim if args.head_dim is not None else args.hidden // args.heads
    if head_dim <= 0 or head_dim % 2 != 0:
        sys.exit(f"--head-dim must be a positive even number, got {head_dim}")
    intermediate = args.intermediate or (args.hidden * 11 // 4 // 64) * 64

    config = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=head_dim, max_position_embeddings=4096, hidden_act="silu", rms_norm_eps=1e-6,
        rope_theta=1_000_000.0, tie_word_embeddings=not args.untied, use_sliding_window=False,
        attention_dropout=0.0, bos_token_id=None, eos_token_id=None,
    )
    setattr(config, "dtype" if hasattr(config, "dtype") else "torch_dtype", torch.bfloat16)
    model = Qwen2ForCausalLM(config)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name in ("model.embed_tokens.weight", "lm_head.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * (2 / args.hidden ** 0.5))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    model = model.to(torch.bfloat16)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    model.save_pretrained(args.out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(SOURCE, name)):
            shutil.copyfile(os.path.join(SOURCE, name), os.path.join(args.out, name))
    print(f"wrote {args.out}: qwen2, {args.layers} layers, hidden {args.hidden}, {args.heads}/{args.kv_heads} heads of "
          f"{head_dim}, intermediate {intermediate}, vocab {args.vocab}, {'untied' if args.untied else 'tied'}")


if __name__ == "__main__":
    main()
