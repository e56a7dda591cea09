"""Export a local Hugging Face encoder to ONNX for mollia-edge's AL model (build time only).

Needs PyTorch and transformers (``pip install -e ".[export]"``); mollia-edge itself never
does at run time. Reads only a LOCAL model folder (config.json, weights, tokenizer.json) —
the hub is switched off — and writes ``models/encoders/NAME/`` with

- ``model.onnx``: token ids, attention mask, token type ids -> ``last_hidden_state``
  (batch, sequence, hidden), dynamic batch and sequence; ``--int8`` quantizes its weights
  dynamically with onnxruntime;
- ``tokenizer.json`` and ``config.json`` copied from the folder;
- ``top_layers.npz``: fp32 weights of the top two transformer layers for ``top-layers``
  training mode (BERT-architecture encoders; others support ``head`` mode only).

    python scripts/export_encoder.py path/to/local/model --name my-encoder --int8
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach a hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np

from mollia_edge.al.encoder import CONFIG_FILE, TOKENIZER_FILE, TOP_LAYERS_EXTRACTED, TOP_LAYERS_FILE
from mollia_edge.llm.catalog import models_dir

MODEL_FILE = "model.onnx"


def export(source: Path, target: Path, int8: bool, opset: int = 17) -> list[str]:
    """Write the encoder files of the local model folder ``source`` into ``target``; returns notes."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source, local_files_only=True).eval()

    class LastHiddenState(torch.nn.Module):
        """The encoder called by keyword, returning only its last hidden state."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    notes = []
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as scratch:
        plain = Path(scratch) / MODEL_FILE
        ids = torch.ones((2, 8), dtype=torch.int64)
        torch.onnx.export(
            LastHiddenState().eval(),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(plain),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in
                          ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
            opset_version=opset,
            dynamo=False,
        )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = Path(scratch) / "model.int8.onnx"
            quantize_dynamic(str(plain), str(quantized), weight_type=QuantType.QInt8)
            plain = quantized
        os.replace(plain, target / MODEL_FILE)
    for name in (TOKENIZER_FILE, CONFIG_FILE):
        shutil.copyfile(source / name, target / name)
    state = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    layers = sorted({int(name.split(".")[2]) for name in state if name.startswith("encoder.layer.")})
    if layers:
        top = tuple(f"encoder.layer.{layer}." for layer in layers[-TOP_LAYERS_EXTRACTED:])
        np.savez(target / TOP_LAYERS_FILE, **{name: value for name, value in state.items() if name.startswith(top)})
    else:
        notes.append("not a BERT-architecture encoder: head mode only (no top_layers.npz)")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="local model folder (config.json, weights, tokenizer.json)")
    parser.add_argument("--name", required=True, help="folder name under models/encoders/")
    parser.add_argument("--int8", action="store_true", help="quantize weights to int8 (smaller file, same speed on CPU)")
    args = parser.parse_args(argv)
    missing = [name for name in (CONFIG_FILE, TOKENIZER_FILE) if not (args.source / name).is_file()]
    if missing:
        print(f"error: {args.source} lacks {', '.join(missing)}: give a local Hugging Face model folder", file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        print('error: exporting needs PyTorch and transformers: pip install -e ".[export]"', file=sys.stderr)
        return 2
    target = models_dir() / "encoders" / args.name
    for note in export(args.source, target, args.int8):
        print(f"note: {note}")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
