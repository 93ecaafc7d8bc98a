"""SHIP recipe: a VAE prompt generator on base classes, then CoOp on real + synthesised features; base / new / H.

Paper: "Improving Zero-Shot Generalization for CLIP with Synthesized Prompts" (arXiv 2307.07397); defaults
from the official scripts (mrflogs/SHIP `main_coop_vae.py`, `main_imagenet_coop_vae.py`, `coop-configs/`):
1. generator (`tinyprompt.methods.ship.SHIPGenerator`): AdamW lr 1e-3 (weight decay 0.01) on encoder,
   decoder and its 4 context vectors, batch 256, 50 epochs (ImageNet 10), few-shot base-class images
   augmented by RandomResizedCrop(scale 0.5-1; ImageNet 0.08-1) + flip;
2. after every `--finetune-every` generator epochs (official 10), a fresh CoOp (4 context vectors from
   "a photo of a") over base + new classes, `--epochs` 200 (ImageNet 20) at batch 256, each real base
   feature paired with one synthetic feature of a uniformly drawn new class, logits 100 · cos, cross-entropy;
   SGD lr 2e-3 without momentum or weight decay (ImageNet: AdamW lr 1e-3, eps 1e-4), cosine per iteration.

Base-to-new protocol: the first ceil(n/2) labels are base (trained on), the rest new (names only); base
accuracy over the base classes only, new accuracy over the new classes only, H = their harmonic mean.
Cross-dataset transfer (`--eval-data`): every class of --data is base, every class of --eval-data is new.

MODEL SELECTION USES THE VALIDATION SPLIT, NEVER THE TEST SET. The official script reports the best test H
over its five fine-tunes (and uses no validation data); this recipe keeps, over every fine-tune and every
evaluated epoch, the prompt with the best validation metric (`--select`: H on the few-shot val images of
base and new classes, or base accuracy alone so that no new-class image is used), and reports the test
numbers of that prompt alone. Without a val split, the last fine-tune's final prompt is reported.

Both stages train on cached image features of `--views` augmented views per image (the official code
re-encodes augmented images at every step); prompts are EOT-truncated. One process (no torchrun).

    tinyprompt train ship --model ViT-B/16 --data DATA/caltech-101/101_ObjectCategories \\
        --split DATA/caltech-101/split_zhou_Caltech101.json --shots 16 --seed 1 --out runs/ship_caltech
Outputs in --out: metrics.json (base / new / H on test, the selection, every fine-tune's val scores),
prompt.pt (the selected CoOp prompt over base + new classes, for `tinyprompt eval`), generator/ (engine
outputs of stage 1, plus generator_epoch<E>.pt snapshots), finetune_epoch<E>/ (one per fine-tune).
"""
import json
from pathlib import Path

import torch

from tinyprompt.commands.args import REQUIRED, int_at_least, positive_float, resolve_device
from tinyprompt.commands.recipes import (FLAGS, TEXT_CHUNK_HELP, add_compile_arg, add_model_arg, add_precision_arg,
                                         add_run_args, add_split_args, item_list, load_run_data, load_splits,
                                         prepare_out, text_chunk_arg, train_config)
from tinyprompt.data.features import FeatureDataset, cached_features
from tinyprompt.data.splits import few_shot, few_shot_splits
from tinyprompt.engine import distributed_info, train
from tinyprompt.hub import load
from tinyprompt.io import atomic_save, atomic_write
from tinyprompt.methods.coop import CoOp, CoOpConfig
from tinyprompt.methods.ship import (
    VARIANTS,
    SHIPConfig,
    SHIPGenerator,
    base_new_accuracy,
    finetune_loss,
    relabel,  # fmt: skip
    split_base_new,
)
from tinyprompt.transforms import model_preprocessing, train_transform

IMAGENET_CLASSES = 1000  # --variant auto picks the ImageNet script for a 1000-class dataset
# variant -> the official script's settings that the generator config does not hold
SETTINGS = {
    "default": {"vae_epochs": 50, "epochs": 200, "crop_scale": (0.5, 1.0),
                "finetune": dict(optimizer="sgd", lr=2e-3, momentum=0.0, weight_decay=0.0)},
    "imagenet": {"vae_epochs": 10, "epochs": 20, "crop_scale": (0.08, 1.0),
                 "finetune": dict(optimizer="adamw", lr=1e-3, eps=1e-4, weight_decay=0.01)},
}  # fmt: skip
CTX_INIT = "a photo of a"  # the fine-tune's CoOp context (4 vectors)


def add_args(parser) -> None:
    data = parser.add_argument_group("data")
    add_model_arg(data)
    add_split_args(data)
    data.add_argument("--eval-data", default=None, help="cross-dataset transfer: every class of --data is base and "
                      "every class of this dataset is new (names only; its val/test images are evaluated)")  # fmt: skip
    data.add_argument("--eval-split", default=None, help="CoOp split file of --eval-data")
    data.add_argument("--shots", type=int_at_least(0), default=16, help="training images per class (0 = all); "
                      "val uses min(shots, 4), both drawn as Dassl does for --seed")  # fmt: skip
    data.add_argument("--seed", type=int_at_least(0), default=1, help="seeds the few-shot draw, the inits and training")
    data.add_argument("--out", type=Path, **REQUIRED, help="output folder (metrics.json, prompt.pt, stage folders)")
    data.add_argument("--variant", default="auto", choices=["auto", *VARIANTS], help="official script to follow: "
                      "default (10 datasets) or imagenet; auto = imagenet for a 1000-class --data")  # fmt: skip
    gen = parser.add_argument_group("stage 1: generator (official: AdamW lr 1e-3, batch 256)")
    gen.add_argument("--vae-epochs", type=int_at_least(1), default=None, help="generator epochs; None = 50 (ImageNet 10)")
    gen.add_argument("--vae-batch-size", type=int_at_least(1), default=256, help="images per generator step")
    gen.add_argument("--vae-lr", type=positive_float, default=1e-3, help="AdamW learning rate of the generator")
    gen.add_argument("--finetune-every", type=int_at_least(1), default=10,
                     help="generator epochs between fine-tunes (the last generator epoch always gets one)")
    fine = parser.add_argument_group("stage 2: CoOp fine-tune on real + synthetic features")
    fine.add_argument("--epochs", type=int_at_least(1), default=None, help="fine-tune epochs; None = 200 (ImageNet 20)")
    fine.add_argument("--batch-size", type=int_at_least(1), default=256,
                      help="real images per fine-tune step (plus as many synthetic features)")
    fine.add_argument("--lr", type=positive_float, default=None, help="None = official: SGD 2e-3 (ImageNet AdamW 1e-3)")
    fine.add_argument("--select", default="H", choices=["H", "base"], help="validation metric of the model "
                      "selection (never the test set): H of base and new val accuracy, or base val accuracy only")  # fmt: skip
    fine.add_argument("--eval-every", type=int_at_least(1), default=None,
                      help="fine-tune epochs between val evaluations; None = only after the last epoch (official)")
    fine.add_argument("--text-chunk", type=text_chunk_arg, default=0,
                      help="prompts per text-encoder pass (0 = all at once); bounds memory for many classes; "
                           + TEXT_CHUNK_HELP)
    run_ = parser.add_argument_group("run")
    run_.add_argument("--views", type=int_at_least(1), default=10,
                      help="augmented views of each training image encoded once and cached (one per image per epoch)")
    add_precision_arg(run_)
    run_.add_argument("--encode-batch-size", type=int_at_least(1), default=64, help="images per image-encoder pass")
    add_run_args(run_, resume_help="continue the stages from their checkpoints in --out")
    add_compile_arg(run_)


def _groups(args, splits, classnames):
    """{"base"|"new": {"names", "train", "val", "test"}}: the two label spaces, each relabelled from 0."""
    train_items, val_items = few_shot_splits(splits["train"], splits["val"], args.shots, args.seed)
    if args.eval_data is None:  # base-to-new within one dataset; the new classes' train images are never used
        base, new = split_base_new(item.label for item in splits["train"])
        if not new:  # nothing to synthesise prompts for, and no new accuracy to report
            raise ValueError(f"base-to-new needs at least 2 classes in the train split, got {len(base)}: the first "
                             f"ceil(n/2) are base and the rest new; add classes, or pass --eval-data for new classes")
        return {name: {"names": [classnames[label] for label in labels], "train": relabel(train_items, labels),
                       "val": relabel(val_items, labels), "test": relabel(splits["test"], labels)}
                for name, labels in (("base", base), ("new", new))}  # fmt: skip
    other, other_names = load_splits(args.eval_data, args.eval_split)
    return {"base": {"names": classnames, "train": train_items, "val": val_items, "test": splits["test"]},
            "new": {"names": other_names, "train": [], "val": few_shot(other["val"], min(args.shots, 4), args.seed),
                    "test": other["test"]}}  # fmt: skip


def _features(clip, items, transform, encode, views=1, seed=0):
    """L2-normalised cached features (V, N, E) of `items` (None when there are none)."""
    if not items:
        return None
    features = cached_features(clip.encode_image, items, transform, views=views, seed=seed, **encode)
    return features / features.norm(dim=-1, keepdim=True)


def run(args) -> int:
    if distributed_info()[1] > 1:
        raise RuntimeError("the SHIP recipe runs in one process (its stages share files in --out): run it without torchrun")
    if args.eval_split is not None and args.eval_data is None:
        raise ValueError("--eval-split needs --eval-data (the image root of that split file)")
    prepare_out(args, stages=("", "generator"))  # the fine-tune folders follow the generator's run
    device = resolve_device(args.device)
    splits, classnames, root = load_run_data(args)
    variant = args.variant if args.variant != "auto" else ("imagenet" if len(classnames) == IMAGENET_CLASSES else "default")
    settings = SETTINGS[variant]
    groups = _groups(args, splits, classnames)
    base, new = groups["base"], groups["new"]
    names, n_base = base["names"] + new["names"], len(base["names"])
    new_root = args.eval_data or root
    # what defines both stages' training data (and the val images of the selection), so that a --resume on other
    # data is refused
    fingerprint = {"base_classnames": base["names"], "new_classnames": new["names"],
                   "train_items": item_list(base["train"], root),
                   "base_val_items": item_list(base["val"], root), "new_val_items": item_list(new["val"], new_root),
                   "shots": args.shots, "seed": args.seed, "views": args.views}  # fmt: skip
    clip, preprocess = load(args.model, device=device, config=args.model_config)
    encode = dict(batch_size=args.encode_batch_size, device=device, num_workers=args.workers)
    augment = train_transform(clip.visual.input_resolution, scale=settings["crop_scale"],
                              preprocessing=model_preprocessing(clip))
    views = _features(clip, base["train"], augment, encode, args.views, args.seed)  # (V, N, E)
    feats = {(g, part): _features(clip, groups[g][part], preprocess, encode)
             for g in ("base", "new") for part in ("val", "test")}  # fmt: skip
    labels = {(g, part): [item.label for item in groups[g][part]] for g in ("base", "new") for part in ("val", "test")}
    has_val = feats["base", "val"] is not None and (args.select == "base" or feats["new", "val"] is not None)
    protocol = "cross-dataset" if args.eval_data else "base-to-new"
    print(f"[tinyprompt] SHIP ({variant} variant, {protocol}): {n_base} base classes ({len(base['train'])} train images, "
          f"{args.views} cached views each), {len(new['names'])} new classes (names only); selection on "
          + (f"val {args.select}" if has_val else "nothing (no val split): the last fine-tune's final prompt is kept"))

    torch.manual_seed(args.seed)  # the generator's init
    generator = SHIPGenerator(clip, names, SHIPConfig(variant=variant, text_chunk=args.text_chunk))
    vae_epochs = args.vae_epochs or settings["vae_epochs"]
    snapshots = _train_generator(args, generator, views, base, feats["base", "val"], labels["base", "val"], vae_epochs,
                                 fingerprint)

    def evaluate(model, part):
        text = model.text_features()  # (n_base + n_new, E)
        return base_new_accuracy(text, n_base, feats["base", part][0], labels["base", part],
                                 feats["new", part][0], labels["new", part])  # fmt: skip

    epochs = args.epochs or settings["epochs"]
    finetune = {**settings["finetune"], **({"lr": args.lr} if args.lr else {})}
    config = train_config(args, max_epoch=epochs, scheduler="cosine_iter", warmup_epochs=0,
                          eval_every=args.eval_every or epochs, select_metric=f"val_{args.select}" if has_val else None,
                          num_workers=0, **finetune)  # cached features in memory: --workers only decodes images
    train_data = FeatureDataset(views, [item.label for item in base["train"]], seed=args.seed)
    coop_config = CoOpConfig(n_ctx=4, ctx_init=CTX_INIT, text_chunk=args.text_chunk)
    runs, chosen = [], None
    for epoch, snapshot in snapshots:
        generator.load_prompt_state_dict(torch.load(snapshot, map_location="cpu", weights_only=True))
        generator.eval()
        model = CoOp(clip, names, coop_config)

        def loss_fn(model, batch, info):  # real base features (B, E), then one synthetic feature each
            return finetune_loss(model, generator, *batch, n_base)

        eval_fn = (lambda m: {f"val_{k}": v for k, v in evaluate(m, "val").items()}) if has_val else None
        out = args.out / f"finetune_epoch{epoch}"
        print(f"[tinyprompt] fine-tune CoOp over {len(names)} classes with the generator of epoch {epoch}: {epochs} epochs")
        result = train(model, loss_fn, train_data, config, out_dir=out, resume=args.resume, eval_fn=eval_fn,
                       device=device, overwrite=args.overwrite, data_fingerprint=fingerprint, flags=FLAGS)
        record = {"generator_epoch": epoch, "out": str(out), "best": result["best"]}
        runs.append(record)
        if has_val and (chosen is None or result["best"]["metrics"][config.select_metric]
                        > chosen["best"]["metrics"][config.select_metric]):  # fmt: skip
            chosen = record
    final_state = model.prompt_state_dict()  # the last fine-tune's last prompt: no selection at all
    chosen_state = torch.load(Path(chosen["out"]) / "best.pt", map_location="cpu", weights_only=True) if chosen else final_state
    test = {}
    if feats["base", "test"] is not None and feats["new", "test"] is not None:
        with torch.no_grad():
            for name, state in (("selected", chosen_state), ("final", final_state)):
                model.load_prompt_state_dict(state)
                test[name] = evaluate(model, "test")
    summary = {"protocol": protocol, "variant": variant, "classes": {"base": base["names"], "new": new["names"]},
               "selection": {"metric": config.select_metric, "chosen": chosen, "runs": runs}, "test": test,
               **test.get("selected", {})}  # fmt: skip
    atomic_save(chosen_state, args.out / "prompt.pt")
    with atomic_write(args.out / "metrics.json", "w") as f:
        json.dump(summary, f, indent=1)
    if test:
        s = test["selected"]
        print(f"[tinyprompt] test base {s['base']:.2f}%  new {s['new']:.2f}%  H {s['H']:.2f}  "
              f"({'selected on val ' + args.select if chosen else 'final prompt, no val split'}); wrote {args.out}")
    return 0


def _train_generator(args, generator, views, base, val_features, val_labels, epochs, fingerprint) -> list:
    """Stage 1 through the engine; returns [(generator epoch, snapshot file)] of the epochs to fine-tune from.

    The snapshots are written by the evaluation hook every --finetune-every epochs (and after the last),
    together with a reconstruction check: REC with z = mu on the base val features (else train view 0).
    """
    out = args.out / "generator"
    config = train_config(args, max_epoch=epochs, batch_size=args.vae_batch_size, optimizer="adamw", lr=args.vae_lr,
                          weight_decay=0.01, scheduler="constant", warmup_epochs=0, eval_every=args.finetune_every,
                          num_workers=0)  # cached features in memory: --workers only decodes images
    check = (val_features[0], torch.as_tensor(val_labels), "val") if val_features is not None else \
        (views[0], torch.tensor([item.label for item in base["train"]]), "train")  # fmt: skip
    current = {}

    def loss_fn(model, batch, info):
        result = model(*batch)
        return result["loss"], {"recon": result["loss_recon"].item(), "kl": result["loss_kl"].item()}

    def snapshot(model):
        epoch = current["epoch"] + 1  # epochs completed
        atomic_save(model.prompt_state_dict(), out / f"generator_epoch{epoch}.pt")
        device = model.ctx.device
        features, labels = check[0].to(device), check[1].to(device)
        result = model(features, labels, eps=torch.zeros(features.shape[0], model.latent_dim, device=device))
        return {f"rec_{check[2]}": result["loss_recon"].item()}

    print(f"[tinyprompt] stage 1: generator, {epochs} epochs (AdamW lr {args.vae_lr}, batch {args.vae_batch_size})")
    train(generator, loss_fn, FeatureDataset(views, [item.label for item in base["train"]], seed=args.seed), config,
          out_dir=out, resume=args.resume, eval_fn=snapshot, epoch_start_fn=lambda m, e: current.update(epoch=e),
          device=generator.ctx.device, overwrite=args.overwrite, data_fingerprint=fingerprint,
          flags={**FLAGS, "lr": "--vae-lr"})  # fmt: skip
    epochs_kept = sorted({*range(args.finetune_every, epochs + 1, args.finetune_every), epochs})
    missing = [e for e in epochs_kept if not (out / f"generator_epoch{e}.pt").is_file()]
    if missing:
        raise FileNotFoundError(f"generator snapshots of epochs {missing} are missing in {out} (a resume after changing "
                                f"--finetune-every?): train into a new --out, or rerun with the original flags")
    return [(e, out / f"generator_epoch{e}.pt") for e in epochs_kept]
