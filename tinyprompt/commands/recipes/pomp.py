"""POMP recipe: pre-train one prompt over a large label space (ImageNet-21K style), with the paper's defaults.

Paper: "Prompt Pre-Training with Twenty-Thousand Classes for Open-Vocabulary Visual Recognition"
(arXiv 2304.04704); defaults from the official configs (amazon-science/prompt-pretraining
`configs/trainers/POMP/*.yaml`): SGD lr 0.002, momentum 0.9, weight decay 5e-4, one warm-up epoch at the
constant 1e-5, then cosine per epoch; 16 images per class; batch 32 images x 4 augmented views; K = 1000
classes per step (the positive and 999 sampled negatives) with the local-correction margin; n_ctx 16 for
20 epochs (or n_ctx 4 for 5 epochs).

Data: a folder per class named by its wnid and a "wnid<TAB>name" file (`tinyprompt.data.largelabel`).
The frozen image encoder runs once per cached view (`--views` augmented views of every image, a feature
cache on disk) and each step takes `--views-per-step` distinct views of each image, so a step costs only
the text side: K prompts through the text encoder with gradients, EOT-truncated, in checkpointed chunks on CPU and
in one pass on CUDA (`--text-chunk auto`).

    tinyprompt train pomp --model ViT-B/16 --data imagenet21k/train --classes imagenet21k_names.tsv \\
        --out runs/pomp_ctx16
    torchrun --nproc_per_node 8 -m tinyprompt train pomp ...      (each rank draws its own negatives)
Outputs in --out: checkpoint.pt (every epoch; --resume continues), prompt.pt (method "pomp": use it with
`tinyprompt eval --prompt`, `tinyprompt export-classifier --prompt`, or as CoOp's initial context via
`tinyprompt.methods.pomp.coop_prompt_state`), metrics.json.
"""
import argparse

import torch

from tinyprompt.commands.args import REQUIRED, finite_float, int_at_least, resolve_device
from tinyprompt.commands.recipes import (FLAGS, TEXT_CHUNK_HELP, add_compile_arg, add_model_arg, add_run_args,
                                         add_sgd_args, item_list, prepare_out, text_chunk_arg, train_config)
from tinyprompt.data.features import cached_features
from tinyprompt.data.largelabel import ViewsDataset, large_label_items
from tinyprompt.engine import is_main_process, train
from tinyprompt.hub import load
from tinyprompt.methods.pomp import MARGINS, POMP, SAMPLERS, POMPConfig
from tinyprompt.prompts import AUTO, POSITIONS
from tinyprompt.transforms import model_preprocessing, train_transform

EPOCHS_BY_N_CTX = {4: 5, 16: 20}  # the paper's two settings; other n_ctx default to 20 epochs


def margin_arg(text: str):
    """--margin: a name from MARGINS, or a number."""
    if text in MARGINS:
        return text
    try:
        return finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"use one of {MARGINS} or a finite number, got {text!r}") from None


def add_args(parser) -> None:
    data = parser.add_argument_group("data")
    add_model_arg(data)
    data.add_argument("--data", **REQUIRED, help="image folder with one sub-folder of images per class (wnid)")
    data.add_argument("--classes", default=None, help="'wnid<TAB>name' file naming every class folder "
                      "(default: the folder names are the class names)")  # fmt: skip
    data.add_argument("--shots", type=int_at_least(0), default=16, help="images per class (0 = all), drawn as "
                      "CoOp/Dassl draw few-shot sets for --seed")  # fmt: skip
    data.add_argument("--seed", type=int_at_least(0), default=1, help="seeds the image draw, the init, the views, "
                      "the negatives and training")  # fmt: skip
    data.add_argument("--out", **REQUIRED, help="output folder (checkpoint.pt, prompt.pt, metrics.json)")
    prompt = parser.add_argument_group("prompt and loss (POMP)")
    prompt.add_argument("--n-ctx", type=int_at_least(1), default=16, help="context vectors (paper: 16 or 4)")
    prompt.add_argument("--ctx-init", default="", help="initialise the context from these words; empty = random")
    prompt.add_argument("--class-token-position", default="end", choices=POSITIONS, help="where the class name goes")
    prompt.add_argument("--k", type=int_at_least(2), default=1000,
                        help="classes per step: the positive plus k-1 negatives sampled from all classes")
    prompt.add_argument("--margin", type=margin_arg, default="paper", help=f"local correction on the negatives: "
                        f"one of {MARGINS} (official = the released code's base-10 variant) or a number")  # fmt: skip
    prompt.add_argument("--sampler", default="per_step", choices=SAMPLERS,
                        help="per_step: negatives seeded by (seed, step, rank); official: one seeded generator")
    prompt.add_argument("--text-chunk", type=text_chunk_arg, default=AUTO,
                        help="prompts per text-encoder pass (0 = all K at once); bounds activation memory. "
                             + TEXT_CHUNK_HELP + "; 'auto' also shares the SOS + context prefix on CPU only")
    prompt.add_argument("--no-checkpoint-text", action="store_true",
                        help="keep every chunk's activations instead of recomputing them in backward (faster, more "
                             "memory); without it they are recomputed on CPU and kept on CUDA")  # fmt: skip
    optim = parser.add_argument_group("optimisation (official POMP defaults)")
    add_sgd_args(optim, epochs=None, epochs_help="max epochs; default 5 for n_ctx 4, else 20", batch_size=32,
                 batch_help="images per step and process", lr=0.002,
                 lr_help="SGD learning rate after the warm-up (cosine)")  # fmt: skip
    run_ = parser.add_argument_group("run")
    run_.add_argument("--views", type=int_at_least(1), default=8, help="augmented views of each image encoded once and cached")
    run_.add_argument("--views-per-step", type=int_at_least(1), default=4,
                      help="distinct cached views of each image in a step (official K_TRANSFORMS)")
    run_.add_argument("--encode-batch-size", type=int_at_least(1), default=64, help="images per image-encoder pass")
    add_run_args(run_)
    add_compile_arg(run_)


def loss_fn(model, batch, info):
    """One POMP step: M cached views of B images against this step's negatives (`POMP.step_loss`)."""
    features, labels = batch  # (B, M, E), (B,)
    return model.step_loss(features, labels, info.global_step, info.rank)


def run(args) -> int:
    if args.views_per_step > args.views:
        raise ValueError(f"--views-per-step {args.views_per_step} > --views {args.views}: cache at least as many views")
    prepare_out(args)
    device = resolve_device(args.device)
    items, classnames = large_label_items(args.data, args.classes, args.shots, args.seed)
    # what defines the training data, so that a --resume on other data is refused
    fingerprint = {"classnames": classnames, "train_items": item_list(items, args.data), "shots": args.shots,
                   "seed": args.seed, "views": args.views, "views_per_step": args.views_per_step}  # fmt: skip
    if args.k > len(classnames) + 1:
        raise ValueError(f"--k {args.k} needs at least {args.k - 1} classes, {args.data} has {len(classnames)}: "
                         f"lower --k (--k {len(classnames) + 1} samples every class each step)")
    torch.manual_seed(args.seed)  # the context init
    clip, _ = load(args.model, device=device, config=args.model_config)
    config = POMPConfig(n_ctx=args.n_ctx, ctx_init=args.ctx_init, class_token_position=args.class_token_position,
                        k=args.k, margin=args.margin, sampler=args.sampler, sampler_seed=args.seed,
                        text_chunk=args.text_chunk, checkpoint=False if args.no_checkpoint_text else AUTO)  # fmt: skip
    model = POMP(clip, classnames, config)
    augment = train_transform(clip.visual.input_resolution, preprocessing=model_preprocessing(clip))
    views = cached_features(clip.encode_image, items, augment, views=args.views, seed=args.seed,
                            batch_size=args.encode_batch_size, device=device, num_workers=args.workers)
    train_data = ViewsDataset(views, [item.label for item in items], args.views_per_step, seed=args.seed)
    epochs = args.epochs or EPOCHS_BY_N_CTX.get(model.prompt.n_ctx, 20)
    run_config = train_config(args, max_epoch=epochs)
    if is_main_process():
        print(f"[tinyprompt] POMP on {len(classnames)} classes, {len(items)} images x {args.views} cached views; "
              f"{epochs} epochs; {args.batch_size} images x {args.views_per_step} views per step; K = {args.k}; "
              f"margin {args.margin}")
    train(model, loss_fn, train_data, run_config, out_dir=args.out, resume=args.resume, device=device,
          overwrite=args.overwrite, data_fingerprint=fingerprint, flags=FLAGS)  # fmt: skip
    return 0
