"""EasyEdit's ROME or MEMIT on PyTorch CPU, timed edit by edit, for the side-by-side with d4s.

Run by `benches/peer/run.sh`, not by hand. It imports only the parts of EasyEdit that ROME and
MEMIT use: the package `__init__`s, which import every editor and its optional dependencies, are
skipped, and any optional module still missing is replaced by an inert stub (listed in the
output); ROME and MEMIT never call them. The covariance corpus is the same text file d4s reads,
served in place of `datasets.load_dataset`, and the covariance is computed (and timed) before the
first edit, apart from the edits.

Each record is edited on a fresh copy of the unedited weights (the single-edit protocol) and
scored with EasyEdit's own `compute_edit_quality`: rewrite and rephrase accuracy (teacher-forced
target tokens) and locality (the neighbour's argmax tokens unchanged from before the edit).
Writes one JSON object with the per-edit wall and CPU seconds, the metrics and the peak RSS.
"""

import argparse
import importlib.abc
import importlib.machinery
import json
import resource
import sys
import time
import types
from pathlib import Path


class _Inert:
    """Stands in for anything an unused optional module exports."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Inert()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert()

    def __mro_entries__(self, bases):
        return (object,)

    def __iter__(self):
        return iter(())


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on `sys.meta_path`: reached only for modules no real finder has, and stubs them only
    when EasyEdit's own code asked (libraries probing for optional modules still get their
    ImportError)."""

    def __init__(self, root):
        self.root = str(root)
        self.own = type(self).find_spec.__code__.co_filename
        self.stubbed = []

    def _asked_by_easyedit(self):
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if not (name.startswith("<frozen importlib") or name == self.own):
                return name.startswith(self.root)
            frame = frame.f_back
        return False

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "easyeditor" or not self._asked_by_easyedit():
            return None
        self.stubbed.append(name)
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def bare_package(name, path):
    """A package entry whose `__init__` is not run (its submodules import normally)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


class TextCorpus:
    """The covariance text as the `train` split of a Hugging Face dataset of `{"text": …}`."""

    def __init__(self, path):
        data = json.loads(Path(path).read_text())
        self.rows = [{"text": t} for t in data]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--easyedit", required=True, help="folder holding easyeditor/")
    ap.add_argument("--method", choices=["rome", "memit"], required=True)
    ap.add_argument("--hparams", required=True)
    ap.add_argument("--records", required=True, help="EasyEdit-format CounterFact records (JSON)")
    ap.add_argument("--corpus", required=True, help="covariance texts: a JSON list of strings")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    root = (Path(args.easyedit) / "easyeditor").resolve()
    finder = _StubFinder(root)
    sys.meta_path.append(finder)
    for pkg in ["easyeditor", "easyeditor.models", "easyeditor.evaluate"]:
        bare_package(pkg, root.joinpath(*pkg.split(".")[1:]))
    # The evaluation imports MELO's LoRA wrapper (only for an isinstance test) and the trainers
    # (star-imported, unused by these metrics); both pull in a vendored PEFT that does not import.
    class LORA:  # noqa: N801 (EasyEdit's name)
        pass

    melo = types.ModuleType("easyeditor.models.melo.melo")
    melo.LORA = LORA
    bare_package("easyeditor.models.melo", root / "models" / "melo")
    sys.modules["easyeditor.models.melo.melo"] = melo
    sys.modules["easyeditor.trainer"] = types.ModuleType("easyeditor.trainer")

    import torch

    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from easyeditor.evaluate.evaluate import compute_edit_quality
    from easyeditor.models.rome import layer_stats as layer_stats_module

    corpus = TextCorpus(args.corpus)
    layer_stats_module.load_dataset = lambda *a, **k: {"train": corpus}
    if args.method == "rome":
        from easyeditor.models.rome.rome_hparams import ROMEHyperParams as Params
        from easyeditor.models.rome.rome_main import apply_rome_to_model as apply
        from easyeditor.models.rome.compute_u import get_inv_cov as covariance
    else:
        from easyeditor.models.memit.memit_hparams import MEMITHyperParams as Params
        from easyeditor.models.memit.memit_main import apply_memit_to_model as apply
        from easyeditor.models.memit.memit_main import get_cov as covariance

    hp = Params.from_hparams(args.hparams)
    tok = AutoTokenizer.from_pretrained(hp.model_name)
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(hp.model_name, dtype=torch.float32)
    model.eval()
    unedited = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # The covariance of every edited layer, before the first edit and timed apart from the edits.
    wall, cpu = time.perf_counter(), cpu_seconds()
    needs_cov = args.method == "memit" or getattr(hp, "mom2_adjustment", False)
    if needs_cov:
        for layer in hp.layers:
            name = hp.rewrite_module_tmp.format(layer)
            if args.method == "memit":
                covariance(model, tok, name, hp.mom2_dataset, hp.mom2_n_samples,
                           hp.mom2_dtype, hparams=hp)
            else:
                covariance(model, tok, name, hp.mom2_dataset, hp.mom2_n_samples,
                           hp.mom2_dtype, hparams=hp)
    cov = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu}

    records = json.loads(Path(args.records).read_text())
    edits = []
    for r in records:
        record = {
            "prompt": r["prompt"],
            "subject": r["subject"],
            "target_new": r["target_new"],
            "ground_truth": r["ground_truth"],
            "rephrase_prompt": r["rephrase_prompt"],
            "locality": {"neighborhood": {"prompt": r["locality_prompt"],
                                          "ground_truth": r["locality_ground_truth"]}},
            "portability": {},
        }
        model.load_state_dict(unedited)
        pre = compute_edit_quality(model, hp.model_name, hp, tok, record, "cpu")
        wall, cpu = time.perf_counter(), cpu_seconds()
        model, _ = apply(model, tok, [record], hp, copy=False, return_orig_weights=False)
        edit_wall, edit_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        post = compute_edit_quality(model, hp.model_name, hp, tok, record, "cpu")
        before = pre["locality"]["neighborhood_output"]
        after = post["locality"]["neighborhood_output"]
        locality = sum(a == b for a, b in zip(before, after)) / max(len(before), 1)
        edits.append({
            "case_id": r.get("case_id"),
            "wall_s": edit_wall,
            "cpu_s": edit_cpu,
            "rewrite": float(post["rewrite_acc"][0] if isinstance(post["rewrite_acc"], list)
                             else post["rewrite_acc"]),
            "rephrase": float(post["rephrase_acc"][0] if isinstance(post["rephrase_acc"], list)
                              else post["rephrase_acc"]),
            "locality": locality,
        })
        print(json.dumps(edits[-1]), flush=True)

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {
        "tool": "EasyEdit",
        "method": args.method,
        "torch": torch.__version__,
        "covariance": cov,
        "edits": edits,
        "peak_rss_mib": peak_kib / 1024,
        "stubbed_modules": sorted({n.split(".")[0] for n in finder.stubbed}),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
