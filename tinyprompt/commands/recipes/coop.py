"""CoOp recipe: few-shot prompt learning on an image-classification dataset, with the official defaults.

Paper: "Learning to Prompt for Vision-Language Models" (arXiv 2109.01134); defaults from the official
configs (KaiyangZhou/CoOp `configs/trainers/CoOp/*.yaml`, `scripts/coop/main.sh`): SGD lr 0.002, momentum
0.9, weight decay 5e-4, batch 32, one warm-up epoch at the constant 1e-5, then cosine; 16 context
vectors, class token at the end; max epochs by shots: 16 / 8 -> 200, 4 / 2 -> 100, 1 -> 50 (ImageNet:
50); random resized crop + horizontal flip; few-shot train/val drawn as Dassl does for the seed.

The official trainer re-encodes every augmented image at every step through the frozen image encoder.
By default this recipe encodes K augmented views of every training image once (`--views`, a feature
cache on disk keyed by everything that affects the features) and each epoch trains on one cached view
per image, so a step costs only the text encoder; `--reencode` keeps the official per-step augmentation.

    tinyprompt train coop --model ViT-B/16 --data DATA/oxford_pets/images \\
        --split DATA/oxford_pets/split_zhou_OxfordPets.json --shots 16 --seed 1 --out runs/pets_16s_seed1
Outputs in --out: checkpoint.pt (every epoch; --resume continues), prompt.pt, best.pt (best val
accuracy), metrics.json (per-epoch logs, val accuracy, and test accuracy of the final and best prompts).
"""
import hashlib
import json
from pathlib import Path

import torch

from tinyprompt.commands.args import REQUIRED, int_at_least, resolve_device
from tinyprompt.commands.recipes import (FLAGS, TEXT_CHUNK_HELP, add_compile_arg, add_model_arg, add_run_args,
                                         add_sgd_args, add_split_args, item_list, load_run_data, prepare_out,
                                         text_chunk_arg, train_config)
from tinyprompt.data.features import FeatureDataset, cached_features
from tinyprompt.data.splits import ImageDataset, few_shot_splits
from tinyprompt.engine import is_main_process, train
from tinyprompt.hub import load
from tinyprompt.io import atomic_write
from tinyprompt.methods import load_prompt, read_prompt
from tinyprompt.methods.coop import LOSSES, CoOp, CoOpConfig
from tinyprompt.methods.pomp import coop_prompt_state
from tinyprompt.metrics import accuracy, accuracy_of_features
from tinyprompt.prompts import POSITIONS
from tinyprompt.protocols import SUBSETS, subsample_classes
from tinyprompt.transforms import model_preprocessing, train_transform

IMAGENET_CLASSES = 1000  # CoOp trains ImageNet for 50 epochs at every shot count


def default_epochs(shots: int, n_cls: int) -> int:
    """CoOp's MAX_EPOCH for a shot count (0 = all images counts as many shots)."""
    if n_cls == IMAGENET_CLASSES:
        return 50
    if shots == 0 or shots >= 8:
        return 200
    return 100 if shots >= 2 else 50


def add_args(parser) -> None:
    data = parser.add_argument_group("data")
    add_model_arg(data)
    add_split_args(data)
    data.add_argument("--shots", type=int_at_least(0), default=16, help="training images per class (0 = all); "
                      "val uses min(shots, 4), both drawn as Dassl does for --seed")  # fmt: skip
    data.add_argument("--seed", type=int_at_least(0), default=1, help="seeds the few-shot draw, the init and training")
    data.add_argument("--subsample", default="all", choices=SUBSETS, help="train on these classes: all, or the base / "
                      "new half of CoCoOp's base-to-new split (the first ceil(n/2) sorted labels are base)")  # fmt: skip
    data.add_argument("--out", type=Path, **REQUIRED, help="output folder (checkpoint.pt, prompt.pt, metrics.json)")
    prompt = parser.add_argument_group("prompt (CoOp)")
    prompt.add_argument("--n-ctx", type=int_at_least(1), default=16, help="context vectors (ignored with --ctx-init)")
    prompt.add_argument("--ctx-init", default="", help="initialise the context from these words, e.g. 'a photo of a' "
                        "(n_ctx = the word count); empty = random N(0, 0.02²) (default: %(default)r)")  # fmt: skip
    prompt.add_argument("--csc", action="store_true", help="class-specific contexts instead of one shared context")
    prompt.add_argument("--init-prompt", type=Path, default=None, help="start from this saved shared context (a "
                        "CoOp or POMP prompt.pt, e.g. POMP's pre-trained prompt); its n_ctx, init words and class "
                        "token position replace --n-ctx, --ctx-init and --class-token-position")  # fmt: skip
    prompt.add_argument("--class-token-position", default="end", choices=POSITIONS, help="where the class name goes")
    prompt.add_argument("--loss", default="cross_entropy", choices=LOSSES, help="F.cross_entropy, or the same loss "
                        "through tinyprompt.kernels.sampled_softmax_loss")  # fmt: skip
    prompt.add_argument("--text-chunk", type=text_chunk_arg, default=0,
                        help="class prompts per text-encoder pass, grouped by prompt length (less padding: faster "
                             "on CPU); 0 = all in one padded pass (fewest kernel launches: best on CUDA); "
                             + TEXT_CHUNK_HELP)
    prompt.add_argument("--checkpoint-text", action="store_true",
                        help="activation checkpointing of the text encoder (less memory, ~1/3 more text compute)")
    optim = parser.add_argument_group("optimisation (official CoOp defaults)")
    add_sgd_args(optim, epochs=None, epochs_help="max epochs; default by shots as CoOp: 16/8 -> 200, 4/2 -> 100, "
                 "1 -> 50; ImageNet (1000 classes) 50", batch_size=32, batch_help="images per step",
                 lr=0.002, lr_help="SGD learning rate after the warm-up (cosine)")  # fmt: skip
    run_ = parser.add_argument_group("run")
    run_.add_argument("--views", type=int_at_least(1), default=10,
                      help="augmented views of each training image encoded once and cached (one per image per epoch)")
    run_.add_argument("--reencode", action="store_true",
                      help="encode freshly augmented images at every step (the official way; much slower)")
    run_.add_argument("--eval-every", type=int_at_least(1), default=1, help="epochs between val evaluations")
    run_.add_argument("--encode-batch-size", type=int_at_least(1), default=64, help="images per image-encoder pass")
    add_run_args(run_)
    add_compile_arg(run_)


def _init_prompt(path, csc: bool) -> dict:
    """A saved shared context as a CoOp prompt state (POMP's converted), with its prompt config and source method."""
    state = read_prompt(path)
    source = state["method"]
    if source == "pomp":
        state = coop_prompt_state(state)
    elif source != "coop":
        raise ValueError(f"--init-prompt {path} is a {source} prompt: pass a CoOp or POMP prompt.pt")
    keys = ("n_ctx", "ctx_init", "csc", "class_token_position")
    config = {key: state["config"][key] for key in keys if key in state["config"]}
    if config.get("csc") or csc:
        raise ValueError(f"--init-prompt {path}: only a shared context transfers to new classes; class-specific "
                         f"contexts (--csc) belong to their own classes")  # fmt: skip
    return {**state, "config": config, "source": source}


def _loss_fn(reencode: bool):
    def loss_fn(model, batch, info):
        inputs, labels = batch
        if reencode:  # the frozen image encoder: no graph, as in the official code (no parameter needs grad)
            with torch.no_grad():
                inputs = model.clip.encode_image(inputs)
        return model.loss(inputs, labels)

    return loss_fn


def run(args) -> int:
    if args.ctx_init and args.csc:
        raise ValueError("--csc cannot be combined with --ctx-init (the official code ignores CSC then): drop one")
    prepare_out(args)
    device = resolve_device(args.device)
    splits, classnames, root = load_run_data(args)
    # CoCoOp's order: the few-shot draw over all classes, then the base / new half of it
    train_items, val_items = few_shot_splits(splits["train"], splits["val"], args.shots, args.seed)
    drawn = {**splits, "train": train_items, "val": val_items}
    splits, classnames = subsample_classes(drawn, classnames, args.subsample)
    train_items, val_items = splits["train"], splits["val"]
    # what defines the training data, so that a --resume on other data is refused
    fingerprint = {"classnames": classnames, "train_items": item_list(train_items, root),
                   "val_items": item_list(val_items, root), "shots": args.shots, "seed": args.seed, "subsample": args.subsample,
                   "views": "reencode" if args.reencode else args.views}  # fmt: skip
    init = _init_prompt(args.init_prompt, args.csc) if args.init_prompt is not None else None
    if init is not None:
        # a resume from another starting context is refused
        fingerprint["init_prompt"] = hashlib.sha256(init["ctx"].float().numpy().tobytes()).hexdigest()
    torch.manual_seed(args.seed)  # the context init
    clip, preprocess = load(args.model, device=device, config=args.model_config)
    n_px = clip.visual.input_resolution
    prompt = init["config"] if init is not None else dict(n_ctx=args.n_ctx, ctx_init=args.ctx_init, csc=args.csc,
                                                          class_token_position=args.class_token_position)  # fmt: skip
    config = CoOpConfig(**prompt, loss=args.loss, text_chunk=args.text_chunk, checkpoint=args.checkpoint_text)
    model = CoOp(clip, classnames, config)
    if init is not None:
        model.load_prompt_state_dict(init)
        print(f"[tinyprompt] context initialised from {args.init_prompt} ({init['source']} prompt: "
              f"{', '.join(f'{k}={v!r}' for k, v in init['config'].items())})")
    encode = dict(batch_size=args.encode_batch_size, device=device, num_workers=args.workers)

    augment = train_transform(n_px, preprocessing=model_preprocessing(clip))
    if args.reencode:
        train_data = ImageDataset(train_items, augment)
    else:
        views = cached_features(clip.encode_image, train_items, augment, views=args.views, seed=args.seed, **encode)
        train_data = FeatureDataset(views, [item.label for item in train_items], seed=args.seed)

    eval_fn = None
    if val_items:
        val_features = cached_features(clip.encode_image, val_items, preprocess, **encode)[0]  # (N, E)
        val_labels = torch.tensor([item.label for item in val_items], device=device)

        def eval_fn(model):
            logits = model.forward_features(val_features.to(device))
            return {"val_acc": accuracy(logits, val_labels)[0]}

    epochs = args.epochs or default_epochs(args.shots, len(classnames))
    run_config = train_config(args, max_epoch=epochs, eval_every=args.eval_every,
                              select_metric="val_acc" if val_items else None)  # fmt: skip
    if is_main_process():
        print(f"[tinyprompt] CoOp on {len(classnames)} classes: {len(train_items)} train / {len(val_items)} val / "
              f"{len(splits['test'])} test images; {epochs} epochs; "
              + ("re-encoding images every step" if args.reencode else f"{args.views} cached views per image"))
    result = train(model, _loss_fn(args.reencode), train_data, run_config, out_dir=args.out, resume=args.resume,
                   eval_fn=eval_fn, device=device, overwrite=args.overwrite, data_fingerprint=fingerprint,
                   flags=FLAGS)  # fmt: skip
    if is_main_process():
        _test(model, clip, preprocess, splits["test"], classnames, args.out, encode, result)
    return 0


def _test(model, clip, preprocess, items, classnames, out: Path, encode: dict, result: dict) -> None:
    """Test accuracy of the final prompt (CoOp reports it) and of the best-val prompt, added to metrics.json."""
    if not items:
        return
    features = cached_features(clip.encode_image, items, preprocess, **encode)[0]  # (N, E)
    labels = [item.label for item in items]
    test = {"final": accuracy_of_features(model, features, labels)}
    best = out / "best.pt"
    if result.get("best") is not None and best.is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)
        test["best_val"] = accuracy_of_features(load_prompt(clip, state, classnames), features, labels)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["test"] = test
    with atomic_write(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    print("[tinyprompt] test " + "  ".join(f"{name} top1 {r['top1']:.2f}%" for name, r in test.items()))
