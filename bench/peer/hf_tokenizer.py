"""Tokenizer parity: transformers' AutoTokenizer on a Tandem-made model dir vs Tandem's ids.

Usage: python3 bench/peer/hf_tokenizer.py MODEL_DIR OURS.json
Prints one line per text and exits non-zero on any mismatch.
"""
import json
import sys

from transformers import AutoTokenizer

model_dir, ours_path = sys.argv[1], sys.argv[2]
ours = json.load(open(ours_path))
tok = AutoTokenizer.from_pretrained(model_dir)
bad = 0
for text, ids in zip(ours["texts"], ours["ids"]):
    hf = tok.encode(text, add_special_tokens=False)
    same = hf == ids
    bad += not same
    print(f"{'ok  ' if same else 'DIFF'} {len(ids):4d} tokens  {text[:40]!r}" + ("" if same else f"\n  ours {ids}\n  hf   {hf}"))
chat = tok.apply_chat_template(ours["messages"], tokenize=False, add_generation_prompt=True)
same = chat == ours["chat"]
bad += not same
print(f"{'ok  ' if same else 'DIFF'} chat template" + ("" if same else f"\n  ours {ours['chat']!r}\n  hf   {chat!r}"))
sys.exit(1 if bad else 0)
