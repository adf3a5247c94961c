"""How far transformers' own bf16/f16 forward pass lands from its f32 reference, per fixture.

A side-by-side for BENCHMARKS.md (never run in CI): d4s's half-precision runtime is checked against
the same f32 references by `tests/runtime_fixtures.rs` (`*_in_bf16`), and its error should be of
the same size as transformers'. Writes each run's logits as JSON so they can be compared directly.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers
    /tmp/venv/bin/python scripts/transformers_precision.py ../shared/fixtures [out_dir]
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

FIXTURES = ["tiny-gpt2", "tiny-gptj", "tiny-llama", "tiny-llama3", "tiny-qwen2", "tiny-qwen3",
            "tiny-mistral", "tiny-gemma2", "tiny-gptneox"]


def records(reference):
    return reference["records"] if "records" in reference else [reference]


def main():
    root = Path(sys.argv[1])
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    print(f"torch {torch.__version__}; max |Δlogit| against the f32 reference, all positions")
    print(f"{'fixture':14} {'bf16':>10} {'f16':>10}")
    for name in FIXTURES:
        reference = json.loads((root / name / "reference.json").read_text())
        row = []
        for dtype in (torch.bfloat16, torch.float16):
            model = AutoModelForCausalLM.from_pretrained(
                root / name, dtype=dtype, attn_implementation="eager")
            model.eval()
            worst = 0.0
            dumped = []
            for rec in records(reference):
                ids = torch.tensor([rec["input_ids"]])
                with torch.no_grad():
                    logits = model(ids).logits[0].float()
                ref = torch.tensor(rec["logits"])
                worst = max(worst, (logits - ref).abs().max().item())
                dumped.append(logits.tolist())
            row.append(worst)
            if out_dir:
                out_dir.mkdir(parents=True, exist_ok=True)
                tag = "bf16" if dtype == torch.bfloat16 else "f16"
                (out_dir / f"{name}.{tag}.json").write_text(json.dumps(dumped))
        print(f"{name:14} {row[0]:10.3e} {row[1]:10.3e}")


if __name__ == "__main__":
    main()
