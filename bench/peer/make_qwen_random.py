"""Write a random-weight model directory with Qwen2.5-3B's exact shapes, for speed benchmarks.

    python3 bench/peer/make_qwen_random.py --out /tmp/qwen3b-random [--preset 3b|tiny] [--seed 0]

The weights are random but the tensors are those of Qwen2.5-3B (vocab 151936, hidden 2048, MLP
11008, 36 layers, 16 query / 2 KV heads of 128, tied embeddings, q/k/v bias, rope theta 1e6,
32768 positions, bf16), so a decode step reads the same bytes and does the same FLOPs as with the
real checkpoint. `--preset tiny` has the same structure at toy size, for tests on a CPU.

The tokenizer (and generation_config.json) come from models/tandem-small: it has 2048 tokens,
fewer than the model's vocab, as a real Qwen checkpoint pads its 151665 tokens to 151936. So
that every generated token still has text (bench/serve.ts times TTFT and ITL from chunks that
carry text), the embedding rows of ids that do not decode to standalone text (ids past the
tokenizer, special tokens, partial UTF-8 pieces) are zero and the final norm's gain is raised:
those ids then get logit 0 while text ids get logits of a few units, so greedy decoding and
top-k sampling only ever pick text ids. Zero rows change no shape, byte or FLOP.

Built with transformers' own Qwen2Config / Qwen2ForCausalLM and save_pretrained, so the directory
is exactly what transformers itself writes; on a GPU the weights are drawn there (seconds for 3B).
"""
import argparse
import json
import os
import shutil
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

PRESETS = {
    # Qwen/Qwen2.5-3B config.json, field by field.
    "3b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
               num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32768),
    # Same structure (GQA 2:1, tied, qkv bias, vocab padded past the tokenizer), toy size.
    "tiny": dict(vocab_size=4096, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096),
}
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = os.path.normpath(os.path.join(HERE, "..", "..", "models", "tandem-small"))


def text_ids(source: str) -> list[int]:
    """Ids of the source tokenizer that decode, alone, to non-empty complete UTF-8 text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(source, "tokenizer.json"))
    with open(os.path.join(source, "tokenizer.json"), encoding="utf-8") as f:
        special = {t["id"] for t in json.load(f).get("added_tokens", []) if t.get("special")}
    keep = []
    for i in range(tok.get_vocab_size(with_added_tokens=True)):
        if i in special:
            continue
        text = tok.decode([i], skip_special_tokens=True)
        if text and "\ufffd" not in text:
            keep.append(i)
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory to write (replaced if it exists)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="3b")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02, help="weight std (Qwen2's initializer_range)")
    ap.add_argument("--final-norm-gain", type=float, default=4.0,
                    help="value of model.norm.weight: spreads text-id logits well above the zero rows' 0")
    ap.add_argument("--source", default=DEFAULT_SOURCE, help="directory to take the tokenizer files from")
    ap.add_argument("--max-shard-size", default="5GB", help="save_pretrained's max_shard_size (5GB: 2 shards for 3b)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.std <= 0:
        sys.exit(f"--std must be > 0, got {args.std}")
    if not os.path.isfile(os.path.join(args.source, "tokenizer.json")):
        sys.exit(f"--source {args.source}: no tokenizer.json there")

    started = time.perf_counter()
    with open(os.path.join(args.source, "config.json"), encoding="utf-8") as f:
        source_cfg = json.load(f)
    keep = text_ids(args.source)
    shape = PRESETS[args.preset]
    if max(keep) >= shape["vocab_size"]:
        sys.exit(f"--source tokenizer has ids up to {max(keep)}, past the {args.preset} vocab of {shape['vocab_size']}")
    config = Qwen2Config(
        **shape,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        use_sliding_window=False,
        sliding_window=shape["max_position_embeddings"],
        max_window_layers=shape["num_hidden_layers"],
        initializer_range=args.std,
        attention_dropout=0.0,
        bos_token_id=source_cfg.get("bos_token_id"),
        eos_token_id=source_cfg.get("eos_token_id"),
        use_cache=True,
    )
    # Recorded in config.json as the real checkpoint's ("dtype" in transformers 5, "torch_dtype" before).
    setattr(config, "dtype" if hasattr(config, "dtype") else "torch_dtype", torch.bfloat16)

    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16: 6 GB for 3b, not 12
    try:
        with torch.device(args.device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(device=args.device, dtype=torch.bfloat16)  # a no-op where the context was honoured
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:  # weights and the q/k/v biases alike, so the bias path carries real numbers
                p.normal_(0.0, args.std, generator=gen)
        emb = model.model.embed_tokens.weight
        mask = torch.ones(emb.shape[0], dtype=torch.bool, device=emb.device)
        mask[torch.tensor(keep, device=emb.device)] = False
        emb[mask] = 0
        model.model.norm.weight.fill_(args.final_norm_gain)
    assert model.lm_head.weight.data_ptr() == emb.data_ptr(), "embeddings should be tied"
    if args.device == "cuda":
        torch.cuda.synchronize()
    drawn = time.perf_counter()

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size=args.max_shard_size)
    for name in TOKENIZER_FILES:
        src = os.path.join(args.source, name)
        if os.path.isfile(src):  # generation_config.json replaces the one save_pretrained wrote
            shutil.copyfile(src, os.path.join(args.out, name))
    params = sum(p.numel() for p in model.parameters())  # tied: the embedding is counted once
    print(json.dumps({
        "out": args.out, "preset": args.preset, "params": params, "bytes_bf16": params * 2,
        "text_ids": len(keep), "vocab": shape["vocab_size"], "device": args.device,
        "draw_s": round(drawn - started, 2), "save_s": round(time.perf_counter() - drawn, 2),
    }))


if __name__ == "__main__":
    main()
