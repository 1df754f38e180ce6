"""The peer a user would otherwise run, and the card's own speed limits, measured in one process.

    python3 bench/peer/hf_generate.py --model DIR [--batch 1,64] [--prompt-len 32] [--new-tokens 64]
        [--card NAME] [--out FILE.json]

1. The card: copy bandwidth (a large device-to-device copy; bytes read + bytes written over the
   median time of repeats, timed with CUDA events) and the bf16 GEMM rate (an 8192^3 matmul of
   random data, 2*M*N*K FLOPs over the median time). bench/gpu-decode.ts turns these into floors.
2. Hugging Face transformers `generate` on DIR, as a user runs it out of the box: bf16, sdpa
   attention, the default dynamic KV cache, greedy, and min_new_tokens = max_new_tokens so every
   row produces exactly as many tokens as Tandem does with ignore_eos. Decode tokens/s comes
   from two runs that differ only in length, B*(N-1) / (time(N) - time(1)), so prefill and setup
   cancel out and the figure is decode alone, the same quantity gpu-decode.ts reports.

Prints one JSON document {"card","date","command","results":[...]} (also to --out); bandwidth
is in GB/s (1e9 bytes), GEMM in TFLOP/s. Without CUDA it runs on the CPU (to test this script)
and leaves the card figures out.
"""
import argparse
import copy
import datetime
import json
import statistics
import sys
import time

import torch


def parse_batches(raw: str) -> list[int]:
    try:
        out = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"--batch must be a comma-separated list of integers, got '{raw}'")
    if not out or any(b < 1 for b in out):
        sys.exit(f"--batch must list integers >= 1, got '{raw}'")
    return out


def timed_ms(fn, repeats: int, warmup: int) -> float:
    """Median milliseconds of fn() on the current stream, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbs(nbytes: int, repeats: int) -> float:
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = timed_ms(lambda: dst.copy_(src), repeats, warmup=3)
    return 2 * src.numel() * src.element_size() / (ms / 1e3) / 1e9  # read + write


def gemm_tflops(n: int, repeats: int) -> float:
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    c = torch.empty(n, n, dtype=torch.bfloat16, device="cuda")
    ms = timed_ms(lambda: torch.matmul(a, b, out=c), repeats, warmup=5)
    return 2 * n**3 / (ms / 1e3) / 1e12


def tokenizer_size(model_dir: str, fallback: int) -> int:
    """Prompt ids are drawn below this: the ids the tokenizer has (the model's vocab may be padded past it)."""
    try:
        with open(f"{model_dir}/tokenizer.json", encoding="utf-8") as f:
            return min(fallback, len(json.load(f)["model"]["vocab"]))
    except (OSError, KeyError, ValueError):
        return fallback


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def generate_seconds(model, ids, new_tokens: int, gen_config, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    cfg = copy.deepcopy(gen_config)
    cfg.max_new_tokens = cfg.min_new_tokens = new_tokens
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
    sync(device)
    elapsed = time.perf_counter() - start
    got = out.shape[1] - ids.shape[1]
    if got != new_tokens:  # min_new_tokens should make this impossible; a short row would inflate the rate
        raise RuntimeError(f"generate returned {got} new tokens, asked for {new_tokens}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="1,64", help="comma-separated batch sizes (default 1,64)")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64, help="decode tokens per row in the timed run")
    ap.add_argument("--repeats", type=int, default=2, help="timed pairs of runs per batch size (median)")
    ap.add_argument("--copy-bytes", type=int, default=2 << 30, help="bytes per copy buffer (default 2 GiB)")
    ap.add_argument("--gemm-n", type=int, default=8192)
    ap.add_argument("--skip-card", action="store_true", help="leave out the bandwidth and GEMM figures")
    ap.add_argument("--skip-generate", action="store_true", help="only the card figures")
    ap.add_argument("--card", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    batches = parse_batches(args.batch)
    for name in ("prompt_len", "repeats", "gemm_n", "copy_bytes"):
        if getattr(args, name) < 1:
            sys.exit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.new_tokens < 2:
        sys.exit(f"--new-tokens must be >= 2 (decode time is time(N) - time(1)), got {args.new_tokens}")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = args.card or (torch.cuda.get_device_name(0) if device == "cuda" else "CPU (torch)")
    results = []
    phases = {}
    if device == "cuda" and not args.skip_card:
        t = time.perf_counter()
        results.append({"name": "copy_bandwidth", "value": round(copy_bandwidth_gbs(args.copy_bytes, 20), 1), "unit": "GB/s"})
        results.append({"name": "gemm_bf16_8192", "value": round(gemm_tflops(args.gemm_n, 20), 1), "unit": "TFLOP/s"})
        torch.cuda.empty_cache()
        phases["card_s"] = round(time.perf_counter() - t, 2)
        print(f"card: copy {results[0]['value']} GB/s, bf16 GEMM {results[1]['value']} TFLOP/s", file=sys.stderr)

    error = None
    try:
        versions = run_generate(args, batches, device, results, phases) if not args.skip_generate else {}
    except Exception as e:  # still write the card figures: the TS side needs them for its floors
        error = f"{type(e).__name__}: {e}"
        print(f"hf generate failed: {error}", file=sys.stderr)
        versions = {}
    versions["torch"] = torch.__version__

    doc = {
        "card": card,
        "date": datetime.date.today().isoformat(),
        "command": "python3 " + " ".join(sys.argv),
        "model": args.model,
        "config": {"batch": batches, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                   "repeats": args.repeats, "attn": "sdpa", "dtype": "bfloat16", "decoding": "greedy",
                   "device": device, **versions},
        "phases": phases,
        "results": results,
    }
    if error:
        doc["error"] = error
    text = json.dumps(doc, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    if error:
        sys.exit(1)


def run_generate(args, batches: list[int], device: str, results: list, phases: dict) -> dict:
    """Time transformers generate per batch size into `results`; returns the library versions."""
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    t = time.perf_counter()
    kwargs = dict(dtype=torch.bfloat16, attn_implementation="sdpa")
    try:  # straight onto the card (needs accelerate on older transformers)
        model = AutoModelForCausalLM.from_pretrained(args.model, device_map=device, **kwargs)
    except (ImportError, ValueError):
        model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    model = model.to(device).eval()
    phases["load_s"] = round(time.perf_counter() - t, 2)
    cfg = model.config
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else 0
    # A fresh greedy config: the directory's generation_config.json samples (Qwen's defaults).
    gen_config = GenerationConfig(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                                  eos_token_id=eos, pad_token_id=eos if isinstance(eos, int) else eos[0])
    g = torch.Generator().manual_seed(0)
    prompt_vocab = tokenizer_size(args.model, cfg.vocab_size)
    with torch.inference_mode():
        for b in batches:
            t = time.perf_counter()
            ids = torch.randint(0, prompt_vocab, (b, args.prompt_len), generator=g).to(device)
            generate_seconds(model, ids, 4, gen_config, device)  # warm-up: kernels, allocator
            long, short = [], []
            for _ in range(args.repeats):
                long.append(generate_seconds(model, ids, args.new_tokens, gen_config, device))
                short.append(generate_seconds(model, ids, 1, gen_config, device))
            decode_s = statistics.median(long) - statistics.median(short)
            tps = b * (args.new_tokens - 1) / decode_s
            results.append({"name": f"hf_generate_b{b}_tokens_per_s", "value": round(tps, 2), "unit": "tokens/s"})
            results.append({"name": f"hf_generate_b{b}_ms_per_step", "value": round(decode_s / (args.new_tokens - 1) * 1e3, 3), "unit": "ms"})
            phases[f"b{b}_s"] = round(time.perf_counter() - t, 2)
            print(f"hf generate batch {b}: {tps:.1f} tokens/s ({decode_s / (args.new_tokens - 1) * 1e3:.2f} ms/step)", file=sys.stderr)
    return {"transformers": transformers.__version__}


if __name__ == "__main__":
    main()
