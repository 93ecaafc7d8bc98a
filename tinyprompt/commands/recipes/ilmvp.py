"""ILM-VP recipe: visual prompting of a frozen classifier (CNN or CLIP) with iterative label mapping.

Paper: "Understanding and Improving Visual Prompting: A Label-Mapping Perspective" (arXiv 2211.11635);
defaults from the official scripts (OPTML-Group/ILM-VP `experiments/cnn/ilm_vp.py`, `experiments/clip/ilm_tp_vp.py`):
- CNN source (`--source torchvision:resnet18` or a TorchScript file): images resized to --image-size
  (official: 32 for CIFAR/SVHN/GTSRB, 128 for the others) in [0, 1], zero-padded into the source input
  with a learned sigmoid frame, then the source normalisation; Adam lr 0.01, x0.1 at epochs int(0.5 E)
  and int(0.72 E), 200 epochs, batch 128.
- CLIP source (`--source clip:ViT-B/32`, or clip:PATH): CLIP preprocessing, an additive frame of width
  --pad (30 at 224) after normalisation; the source labels are 81 templates x C class names and the
  mapping picks one text per class; SGD lr 40, momentum 0.9, cosine stepped per iteration, 200 epochs.
- --mapping ilm: the greedy frequency mapping recomputed before every epoch from a fresh pass over the
  training images (flm: once, with the initial prompt; rlm: random, seeded).

    tinyprompt train ilmvp --source torchvision:resnet18 --data DATA/flowers --image-size 128 --out runs/flowers_rn18
    tinyprompt train ilmvp --source clip:ViT-B/32 --data DATA/flowers --out runs/flowers_clip
Outputs in --out: checkpoint.pt (every epoch; --resume continues), prompt.pt (prompt + mapping),
metrics.json (per-epoch logs and the test top-1 accuracy with the final prompt and mapping).
"""
import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tinyprompt.commands.args import (REQUIRED, add_model_config_arg, finite_float, int_at_least,
                                      positive_float, resolve_device)
from tinyprompt.commands.recipes import (FLAGS, add_compile_arg, add_precision_arg, add_run_args, add_split_args,
                                         item_list, load_run_data, prepare_out, train_config)
from tinyprompt.data.splits import ImageDataset, few_shot, make_loader
from tinyprompt.engine import is_main_process, train
from tinyprompt.hub import load
from tinyprompt.io import atomic_write
from tinyprompt.methods.ilmvp import (ILMVP, IMAGENET_MEAN, IMAGENET_STD, MAPPINGS, AdditivePrompt, ILMVPConfig,
                                      PaddingPrompt, clip_text_source, load_classifier)
from tinyprompt.metrics import accuracy

# official optimisation per source kind
DEFAULTS = {
    "cnn": dict(optimizer="adam", lr=0.01, scheduler="multistep", momentum=0.0),
    "clip": dict(optimizer="sgd", lr=40.0, scheduler="cosine_iter", momentum=0.9),
}


@dataclass(frozen=True)
class ResizeToTensor:
    """The official CNN-path transform: RGB, resize to (size, size) bilinear, float (3, size, size) in [0, 1]."""

    size: int

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image  # Pillow is imported by the image reader already

        image = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(self.size, self.size, 3)
        return pixels.permute(2, 0, 1).float().div(255)


def add_args(parser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--source", **REQUIRED, help="frozen source model: clip:NAME_OR_PATH (CLIP with text-prompt "
                      "selection), torchvision:NAME (pretrained, needs torchvision) or a TorchScript classifier file")  # fmt: skip
    add_model_config_arg(data, "a --source clip:PATH")
    add_split_args(data)
    data.add_argument("--shots", type=int_at_least(0), default=0, help="training images per class (0 = all, as the paper)")
    data.add_argument("--seed", type=int_at_least(0), default=7, help="seeds the few-shot draw, rlm and training (official 7)")
    data.add_argument("--out", type=Path, **REQUIRED, help="output folder (checkpoint.pt, prompt.pt, metrics.json)")
    prompt = parser.add_argument_group("prompt and label mapping")
    prompt.add_argument("--mapping", default="ilm", choices=MAPPINGS,
                        help="ilm: recompute before every --mapping-interval epochs; flm: once at the start; rlm: random")
    prompt.add_argument("--mapping-interval", type=int_at_least(1), default=1, help="ilm: epochs between mapping updates")
    prompt.add_argument("--mapping-batch-size", type=int_at_least(1), default=None,
                        help="images per forward of the mapping pass; None = --batch-size")
    prompt.add_argument("--image-size", type=int_at_least(1), default=128,
                        help="CNN source: images are resized to this side and padded into the source input")
    prompt.add_argument("--input-size", type=int_at_least(1), default=224, help="TorchScript source: its input side")
    prompt.add_argument("--mean", type=finite_float, nargs=3, default=list(IMAGENET_MEAN),
                        help="TorchScript source: input mean")
    prompt.add_argument("--std", type=positive_float, nargs=3, default=list(IMAGENET_STD), help="TorchScript source: input std")
    prompt.add_argument("--pad", type=int_at_least(1), default=30, help="CLIP source: width of the additive frame")
    optim = parser.add_argument_group("optimisation (official defaults per source kind)")
    optim.add_argument("--epochs", type=int_at_least(1), default=200, help="epochs")
    optim.add_argument("--batch-size", type=int_at_least(1), default=128, help="images per step")
    optim.add_argument("--lr", type=positive_float, default=None, help="learning rate; None = official: CNN 0.01 (Adam), CLIP 40 (SGD)")
    add_precision_arg(optim, note=" (the official scripts use fp16 autocast)")
    run_ = parser.add_argument_group("run")
    run_.add_argument("--eval-every", type=int_at_least(1), default=None,
                      help="epochs between val (else test) evaluations; None = only after the last epoch")
    add_run_args(run_)
    add_compile_arg(run_)


def build_model(args, classnames, device):
    """(ILMVP model, image transform, source kind) for --source; the prompt's size flags are checked first."""
    config = ILMVPConfig(mapping=args.mapping, interval=args.mapping_interval, seed=args.seed)
    if args.source.startswith("clip:"):
        clip, preprocess = load(args.source[len("clip:"):], device=device, config=args.model_config)
        size = clip.visual.input_resolution  # CLIP's preprocessing sets the image size, not --image-size
        if 2 * args.pad > size:  # the frame is --pad pixels wide on each side of the input
            raise ValueError(f"--pad {args.pad} does not fit the {size}x{size} input of {args.source}: a frame of "
                             f"2 x --pad must be <= {size}, so use --pad 1 to {size // 2} (--image-size "
                             f"{args.image_size} applies to CNN sources only)")
        source = clip_text_source(clip, classnames)
        prompt = AdditivePrompt(size, args.pad)
        return ILMVP(source, prompt, len(classnames), config, classnames).to(device), preprocess, "clip"
    if args.image_size > args.input_size:  # the image is zero-padded, never resized, into the source input
        raise ValueError(f"--image-size {args.image_size} is larger than the source input (--input-size "
                         f"{args.input_size}): use --image-size 1 to {args.input_size}, or a larger --input-size if "
                         f"the source takes one")
    source = load_classifier(args.source, args.input_size, args.mean, args.std, device)
    prompt = PaddingPrompt(args.image_size, source.input_size, source.mean, source.std)
    model = ILMVP(source, prompt, len(classnames), config, classnames).to(device)
    return model, ResizeToTensor(args.image_size), "cnn"


SOURCE_FILE = "source.json"  # beside prompt.pt: the flags that rebuild the source and prompt shape (`load_run_model`)
SOURCE_FLAGS = ("source", "model_config", "image_size", "input_size", "mean", "std", "pad")


def load_run_model(prompt_path, state: dict, device):
    """(ILMVP holding a saved prompt and its mapping, image transform, source spec), rebuilt from the source.json
    that `tinyprompt train ilmvp` wrote beside the prompt: the prompt belongs to that source classifier."""
    path = Path(prompt_path).parent / SOURCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: an ILM-VP prompt works only through the source classifier it "
                                f"was trained with, which `tinyprompt train ilmvp` records in {SOURCE_FILE} beside "
                                f"prompt.pt; keep the prompt in its run folder")  # fmt: skip
    if not state.get("classnames"):
        raise ValueError(f"{prompt_path} names no target classes: its labels cannot be matched to the evaluation data")
    config = state["config"]
    flags = json.loads(path.read_text(encoding="utf-8"))
    args = argparse.Namespace(**flags, mapping=config["mapping"], mapping_interval=config["interval"], seed=config["seed"])
    model, transform, _ = build_model(args, state["classnames"], device)
    model.load_prompt_state_dict(state)
    return model, transform, flags["source"]


def loss_fn(model, batch, info):
    images, labels = batch
    logits = model(images)  # (B, T) through the current mapping
    return model.loss(logits, labels), {"train_acc": accuracy(logits.detach(), labels)[0]}


@torch.no_grad()
def evaluate(model, loader, device) -> float:
    """Top-1 accuracy (percent) with the model's current prompt and mapping."""
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        logits.append(model(images.to(device)).cpu())
        labels.append(targets)
    model.train()
    return accuracy(torch.cat(logits), torch.cat(labels))[0]


def run(args) -> int:
    prepare_out(args)
    device = resolve_device(args.device)
    source = {flag: getattr(args, flag) for flag in SOURCE_FLAGS}  # what rebuilds the model around the prompt
    splits, classnames, root = load_run_data(args)
    train_items = few_shot(splits["train"], args.shots, args.seed)
    torch.manual_seed(args.seed)
    model, transform, kind = build_model(args, classnames, device)
    # what defines the training data and the source it passes through, so that a --resume on others is refused
    fingerprint = {"classnames": classnames, "train_items": item_list(train_items, root), "shots": args.shots,
                   "seed": args.seed, "image_size": args.image_size if kind == "cnn" else None,
                   "source": {flag: str(value) for flag, value in source.items() if flag != "image_size"}}  # fmt: skip
    defaults = DEFAULTS[kind]
    train_data = ImageDataset(train_items, transform)

    def loader(items, batch_size):  # unshuffled: the mapping pass and evaluation
        return make_loader(ImageDataset(items, transform), batch_size, args.workers, device=device)

    mapping_loader = loader(train_items, args.mapping_batch_size or args.batch_size)
    eval_items, eval_name = (splits["val"], "val_acc") if splits["val"] else (splits["test"], "test_acc")
    eval_loader = loader(eval_items, args.batch_size) if eval_items else None
    config = train_config(args, optimizer=defaults["optimizer"], lr=args.lr or defaults["lr"],
                          momentum=defaults["momentum"], weight_decay=0.0, scheduler=defaults["scheduler"],
                          warmup_epochs=0, eval_every=args.eval_every or args.epochs)  # fmt: skip
    if is_main_process():
        print(f"[tinyprompt] ILM-VP ({args.mapping}) with {kind} source {args.source} ({model.n_source} source labels) "
              f"on {len(classnames)} classes: {len(train_items)} train / {len(splits['test'])} test images; "
              f"{args.epochs} epochs, {config.optimizer} lr {config.lr}")
    result = train(model, loss_fn, train_data, config, out_dir=args.out, resume=args.resume,
                   eval_fn=(lambda m: {eval_name: evaluate(m, eval_loader, device)}) if eval_loader else None,
                   epoch_start_fn=lambda m, epoch: m.update_mapping(mapping_loader, epoch), device=device,
                   overwrite=args.overwrite, data_fingerprint=fingerprint, flags=FLAGS)
    if is_main_process():  # beside prompt.pt, once this run's prompt is written (tinyprompt eval reads it)
        with atomic_write(args.out / SOURCE_FILE, "w") as f:
            json.dump(source, f, indent=1)
        if splits["test"]:
            _test(model, loader(splits["test"], args.batch_size), device, args.out, result)
    return 0


def _test(model, loader, device, out: Path, result: dict) -> None:
    """Test top-1 with the final prompt and mapping, and the mapping itself, added to metrics.json."""
    test = {"top1": evaluate(model, loader, device), "mapping": model.mapping.tolist()}
    texts = getattr(model.source, "texts", None)
    if texts is not None:  # CLIP: the text chosen for each class
        test["mapping_texts"] = [texts[s] for s in test["mapping"]]
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["test"] = test
    with atomic_write(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    print(f"[tinyprompt] test top1 {test['top1']:.2f}% (final prompt and mapping, after {len(result['epochs'])} epochs)")
