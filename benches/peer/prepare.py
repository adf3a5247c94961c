"""Inputs both tools read: the records, the covariance texts and one hparams YAML per method.

- records.json: the first N CounterFact records of the EasyEdit edit file, as they are.
- corpus.json: T WikiText paragraphs, each cut to at most 100 tokens of the exported tokenizer,
  so neither tool truncates them (d4s at 128 tokens, EasyEdit at the model's context) and both
  take the same token sequences into the covariance.
- rome.yaml, memit.yaml: EasyEdit's own Llama files with the model's values put in (path,
  layers, last layer, CPU, the corpus's size). d4s reads the same files (`--hparams`).
"""

import argparse
import json
from pathlib import Path

import yaml
from transformers import AutoConfig, AutoTokenizer

LAYERS = {"rome": [5], "memit": [4, 5, 6, 7, 8]}  # d4s's defaults for the default model


def corpus(wikitext, tok, count):
    texts = []
    for para in json.loads(Path(wikitext).read_text()):
        para = para.strip()
        if len(para) < 200 or para.startswith("="):
            continue
        enc = tok(para, return_offsets_mapping=True, add_special_tokens=False)
        if len(enc["input_ids"]) > 100:
            para = para[: enc["offset_mapping"][99][1]]
        texts.append(para)
        if len(texts) == count:
            break
    return texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--counterfact", required=True)
    ap.add_argument("--wikitext", required=True)
    ap.add_argument("--easyedit", required=True)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records = json.loads(Path(a.counterfact).read_text())[: a.n]
    (out / "records.json").write_text(json.dumps(records, indent=1))
    tok = AutoTokenizer.from_pretrained(a.model)
    texts = corpus(a.wikitext, tok, a.texts)
    (out / "corpus.json").write_text(json.dumps(texts))
    config = AutoConfig.from_pretrained(a.model)
    n_layers = config.num_hidden_layers
    for method, folder in [("rome", "ROME"), ("memit", "MEMIT")]:
        hp = yaml.safe_load((Path(a.easyedit) / "hparams" / folder / "llama-7b.yaml").read_text())
        hp.update(
            model_name=str(Path(a.model).resolve()),
            stats_dir=str((out / "easyedit-stats").resolve()),
            device="cpu",
            layers=LAYERS[method],
            v_loss_layer=n_layers - 1,
            mom2_dataset="wikitext",
            mom2_n_samples=len(texts),
        )
        if config.tie_word_embeddings:
            # A tied head is not a parameter of its own; EasyEdit reads the embedding instead.
            hp["lm_head_module"] = "model.embed_tokens"
        (out / f"{method}.yaml").write_text(yaml.safe_dump(hp, sort_keys=False))
    print(f"{len(records)} records, {len(texts)} covariance texts, hparams in {out}")


if __name__ == "__main__":
    main()
