"""`tinyprompt export-classifier`: the class embeddings of a saved prompt, for open-vocabulary models.

A prompt pre-trained over a large label space transfers to any class list (POMP, "Prompt Pre-Training
with Twenty-Thousand Classes for Open-Vocabulary Visual Recognition", arXiv 2304.04704, section 4.3:
its text features replace the hand-written-prompt classifier of open-vocabulary detectors such as
Detic and of segmenters such as ZSSeg). This command writes, for the classes of a file, the text
features of the learned prompt, L2-normalised, as a (C, E) float32 `.npy` array in file order, the
format those detectors load as a zero-shot classifier.

    tinyprompt export-classifier --prompt runs/pomp/prompt.pt --model ViT-B/16 --classes lvis.txt --out lvis_pomp.npy
The class file has one name per line, or "id<TAB>name" lines (underscores become spaces).
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinyprompt.commands.args import REQUIRED, add_prompt_args, int_at_least, resolve_device
from tinyprompt.data.largelabel import read_class_list
from tinyprompt.hub import load
from tinyprompt.io import atomic_write
from tinyprompt.methods import load_prompt, read_prompt

__all__ = ["class_embeddings"]


@torch.no_grad()
def class_embeddings(model) -> torch.Tensor:
    """(C, E) float32 CPU: the model's text feature of every class, L2-normalised."""
    return F.normalize(model.text_features().float(), dim=-1).cpu()


def add_args(parser) -> None:
    add_prompt_args(parser)
    parser.add_argument("--classes", **REQUIRED, type=Path, help="class file: one name per line, or 'id<TAB>name' lines")
    parser.add_argument("--out", **REQUIRED, type=Path, help="output .npy file: (C, E) float32, rows in file order")
    parser.add_argument("--text-chunk", type=int_at_least(0), default=256,
                        help="class prompts per text-encoder pass (0 = all at once); bounds memory for many classes")
    parser.add_argument("--device", default="auto", help="torch device; 'auto' = cuda when available, else cpu")


def run(args) -> int:
    if args.out.suffix != ".npy":
        raise ValueError(f"--out {args.out}: the embeddings are written as a NumPy array, use a .npy file name")
    device = resolve_device(args.device)
    state = read_prompt(args.prompt)
    classnames = read_class_list(args.classes)
    clip, _ = load(args.model, device=device, config=args.model_config)
    model = load_prompt(clip, state, classnames, text_chunk=args.text_chunk)
    embeddings = class_embeddings(model).numpy()  # (C, E)
    with atomic_write(args.out, "wb") as f:
        np.save(f, embeddings)
    print(f"{state['method']} prompt {args.prompt}: {embeddings.shape[0]} classes x {embeddings.shape[1]} dims "
          f"(L2-normalised float32) -> {args.out}")
    return 0
