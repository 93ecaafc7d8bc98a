"""Pre-train the tiny CLIP of the synthetic world: a BPE vocabulary, then contrastive image-caption training.

CLIP ("Learning Transferable Visual Models From Natural Language Supervision", Radford et al., arXiv
2103.00020) in miniature, so that every prompt-learning method runs end to end without a download:
1. the vocabulary: `tinyprompt.bpe.train_bpe` on captions of the world (`tinyprompt.data.synthetic`),
   written as an OpenAI-format merges file that `SimpleTokenizer` loads;
2. the model: `tinyprompt.clip.CLIP` (a small ViT and a small causal text transformer, OpenAI's
   initialisation), trained with CLIP's symmetric contrastive loss on fresh image-caption pairs every step
   (so it never sees an image twice). With f_i, t_j the normalised image and caption features of a batch
   and s = exp(logit_scale) <= 100,

       logits = s f t^T,   loss = (CE(logits, P) + CE(logits^T, P^T)) / 2,

   where P spreads each row's target uniformly over the captions that are the same text as its own
   (short captions such as "a red circle." repeat within a batch: they are positives, not negatives).
   The loop is `tinyprompt.engine.train` (AdamW, one constant warm-up epoch, per-iteration cosine).

    python -m tinyprompt.commands.pretrain_synthetic --out weights/

writes synthetic.pt (the state dict, loadable by `tinyprompt.build_model`), synthetic_bpe.txt (the merges)
and synthetic.json (sha256 of both, the config, torch version, threads, timings, zero-shot accuracies),
which `tinyprompt.load("synthetic")` reads. Bit for bit: the same seed, torch version, CPU kernels
(oneDNN/MKL build and instruction set) and thread count give the same files; another thread count
changes the order of floating-point sums in matmuls and so the last bits of the weights.
"""
import argparse
import ast
import json
import platform
import resource
import time
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tinyprompt.bpe import train_bpe, write_merges
from tinyprompt.clip import CLIP
from tinyprompt.clip_config import CLIPConfig
from tinyprompt.data.synthetic import derive_seed, describe, render, sample_scenes
from tinyprompt.engine import TrainConfig, train
from tinyprompt.io import atomic_save, atomic_write, sha256_file
from tinyprompt.tokenizer import SimpleTokenizer, tokenize
from tinyprompt.transforms import preprocess_tensor

__all__ = ["PretrainConfig", "pretrain", "build_vocabulary", "synthetic_batch", "encode_text_bucketed", "contrastive_loss", "main"]

NAME = "synthetic"  # the files are NAME.pt, NAME_bpe.txt, NAME.json


@dataclass
class PretrainConfig:
    seed: int = 0  # seeds the vocabulary corpus, the initialisation and every batch
    resolution: int = 32  # image side in pixels
    vision_layers: int | tuple = 3  # CLIPConfig's rule: an int = ViT depth, a tuple of 4 stage depths = ResNet
    vision_width: int = 64  # ViT width (a multiple of 64: 64-wide heads), or a ResNet's stem width
    patch_size: int | None = 8  # ViT patch side (a 4x4 grid at 32 px: TaI-DPT's local features); None for a ResNet
    text_width: int = 64  # text transformer width (a multiple of 64: CLIP's heads are 64 wide)
    text_layers: int = 3
    embed_dim: int = 64  # joint embedding size
    context_length: int = 48  # text positions: the longest caption of 4 objects is ~41 tokens
    bpe_captions: int = 6000  # captions the vocabulary is learned from (every word of the world becomes a token)
    steps_per_epoch: int = 25  # the engine's epochs: warm-up is 1 epoch, the cosine runs per step
    epochs: int = 40  # 1,000 steps: shapes need them (colours are learned in a few hundred)
    batch_size: int = 256  # image-caption pairs per step
    multi_objects: float = 0.25  # fraction of each batch that shows 2-4 objects (the rest: one)
    lr: float = 2e-3  # AdamW peak learning rate
    warmup_lr: float = 2e-4  # constant during the first epoch
    weight_decay: float = 0.05
    threads: int = 2  # torch CPU threads: part of what makes the result bit-reproducible

    def __post_init__(self):
        if isinstance(self.vision_layers, list):
            self.vision_layers = tuple(self.vision_layers)
        counts = ("text_layers", "bpe_captions", "steps_per_epoch", "epochs", "batch_size", "threads")
        bad = [f"{name}={getattr(self, name)!r} (must be an int >= 1)" for name in counts
               if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]
        if self.text_width % 64:
            bad.append(f"text_width={self.text_width} is not a multiple of 64 (loaders infer 64-wide heads)")
        if not 0 <= self.multi_objects <= 1:
            bad.append(f"multi_objects={self.multi_objects} must lie in [0, 1]")
        if not self.lr > 0 or self.warmup_lr < 0 or self.weight_decay < 0:
            bad.append(f"lr={self.lr}, warmup_lr={self.warmup_lr}, weight_decay={self.weight_decay}: "
                       f"need lr > 0 and the others >= 0")
        if bad:
            raise ValueError(f"invalid PretrainConfig: {'; '.join(bad)}")
        self.clip_config(vocab_size=1)  # CLIPConfig checks the architecture and names what is wrong

    def clip_config(self, vocab_size: int) -> CLIPConfig:
        return CLIPConfig(self.embed_dim, self.resolution, self.vision_layers, self.vision_width, self.patch_size,
                          self.context_length, vocab_size, self.text_width, self.text_width // 64, self.text_layers)


def _scenes_and_captions(n: int, seed: int, multi_objects: float) -> tuple:
    """n fresh scenes (the first n - m of one object, m = round(n * multi_objects) of 2-4) as
    (uint8 images at no resolution yet: the Scenes pair, captions)."""
    m = round(n * multi_objects)
    single = sample_scenes(n - m, derive_seed(seed, "single"))
    several = sample_scenes(m, derive_seed(seed, "several"), objects=(2, 4))
    return (single, several), describe(single, seed) + describe(several, seed)


def build_vocabulary(config: PretrainConfig, path) -> SimpleTokenizer:
    """Train the BPE merges on captions of the world, write them to `path`, return the tokenizer."""
    _, captions = _scenes_and_captions(config.bpe_captions, derive_seed(config.seed, "bpe"), config.multi_objects)
    write_merges(train_bpe(captions, num_merges=10_000), path)  # stops when no pair repeats: ~130 merges
    return SimpleTokenizer(path)


def synthetic_batch(config: PretrainConfig, step: int, tokenizer) -> tuple:
    """Batch `step` of the stream: (uint8 images (B, 3, R, R), tokens (B, context_length), same (B, B) bool).

    same[i, j]: captions i and j are the same text, so each is a positive for the other's image.
    """
    scenes, captions = _scenes_and_captions(config.batch_size, derive_seed(config.seed, "batch", step),
                                            config.multi_objects)  # fmt: skip
    images = torch.cat([render(s, config.resolution) for s in scenes])
    tokens = tokenize(captions, config.context_length, truncate=True, tokenizer=tokenizer)
    same = (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1)  # (B, B)
    return images, tokens, same


class _Stream:
    """The engine's epoch -> batches: a lazy sequence of `steps_per_epoch` fresh batches."""

    def __init__(self, config, tokenizer, epoch):
        self.config, self.tokenizer, self.epoch = config, tokenizer, epoch

    def __len__(self):
        return self.config.steps_per_epoch

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return synthetic_batch(self.config, self.epoch * len(self) + i, self.tokenizer)


def encode_text_bucketed(model, tokens, buckets: int = 4):
    """encode_text of (B, L) tokens in `buckets` groups of similar length, each run only up to its own longest
    EOT: the same features up to float rounding (the mask is causal), ~2x less text compute, since most
    captions are short."""
    order = tokens.argmax(dim=-1).argsort(stable=True)  # shortest first (EOT has the largest id)
    features = torch.cat([model.encode_text(tokens[part]) for part in order.chunk(buckets)])
    return features[order.argsort()]  # back to the batch order


def contrastive_loss(model, batch, info=None):
    """CLIP's symmetric InfoNCE with identical captions as shared positives; -> (loss, {"acc": ...})."""
    images, tokens, same = batch
    image = F.normalize(model.encode_image(preprocess_tensor(images, model.visual.input_resolution)), dim=-1)
    text = F.normalize(encode_text_bucketed(model, tokens), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * image @ text.t()  # (B, B); CLIP clamps the scale at 100
    target = same.float() / same.sum(dim=1, keepdim=True)  # rows sum to 1; symmetric, so target.T = target
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    accuracy = same[torch.arange(len(same)), logits.argmax(dim=1)].float().mean()  # image -> a right caption
    return loss, {"acc": accuracy.item()}


def build_clip(config: PretrainConfig, vocab_size: int) -> CLIP:
    """The untrained tiny CLIP (OpenAI's initialisation, seeded); heads are 64 wide as in OpenAI's models."""
    torch.manual_seed(config.seed)
    return CLIP(*astuple(config.clip_config(vocab_size)))


def pretrain(config: PretrainConfig, out_dir, log=print) -> dict:
    """Train the vocabulary and the tiny CLIP; write NAME.pt, NAME_bpe.txt and NAME.json into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    try:
        tokenizer = build_vocabulary(config, out / f"{NAME}_bpe.txt")
        model = build_clip(config, tokenizer.vocab_size)
        model.train()
        train_config = TrainConfig(max_epoch=config.epochs, batch_size=config.batch_size, optimizer="adamw",
                                   lr=config.lr, weight_decay=config.weight_decay, scheduler="cosine_iter",
                                   warmup_epochs=1, warmup_lr=config.warmup_lr, seed=config.seed,
                                   log_every=config.steps_per_epoch)  # fmt: skip
        result = train(model, contrastive_loss, lambda epoch: _Stream(config, tokenizer, epoch), train_config)
        model.eval()
        atomic_save(model.state_dict(), out / f"{NAME}.pt")
    finally:
        torch.set_num_threads(threads)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    record = {
        "name": NAME, "file": f"{NAME}.pt", "sha256": sha256_file(out / f"{NAME}.pt"),
        "bpe": f"{NAME}_bpe.txt", "bpe_sha256": sha256_file(out / f"{NAME}_bpe.txt"),
        "vocab_size": tokenizer.vocab_size, "input_resolution": config.resolution,
        "context_length": config.context_length, "config": asdict(config),
        "reproduce": "python -m tinyprompt.commands.pretrain_synthetic --out weights/",
        "made_with": {"torch": torch.__version__, "threads": config.threads, "machine": platform.machine(),
                      "processor": _processor()},
        "train_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
        "final_epoch": {k: round(v, 4) for k, v in result["final"].items() if isinstance(v, float)},
    }
    with atomic_write(out / f"{NAME}.json", "w") as f:
        json.dump(record, f, indent=1)
    log(f"wrote {out / record['file']} (sha256 {record['sha256']}), {record['bpe']}, {NAME}.json "
        f"in {seconds:.1f} s ({cpu:.1f} s CPU, {config.threads} threads)")
    return record


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def main(argv=None) -> int:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(prog="python -m tinyprompt.commands.pretrain_synthetic", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="folder for synthetic.pt, synthetic_bpe.txt, synthetic.json")
    for name, value in asdict(defaults).items():  # Python literals: --lr 1e-3, --vision-layers "(1, 1, 1, 1)"
        parser.add_argument("--" + name.replace("_", "-"), type=ast.literal_eval, default=value)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    pretrain(PretrainConfig(**args), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
