"""TaI-DPT recipe: multi-label prompts learned from captions alone, evaluated by mAP on images.

Paper: "Texts as Images in Prompt Tuning for Multi-Label Image Recognition" (arXiv 2211.12739).
Defaults from the official configs (guozix/TaI-DPT `configs/trainers/Caption_distill_double/*.yaml`):
SGD lr 1e-4 (NUS-WIDE 1e-3), momentum 0.9, weight decay 5e-4, one warm-up epoch at the constant 1e-5,
then cosine; 20 epochs; batch 512 sentences; 16 context vectors per branch; test temperature 40
(NUS-WIDE 4). Training sentences: the captions that name a class (labels from the text,
`tinyprompt.data.captions`), plus per class 9 x "a photo of a {}." and the 80 ImageNet templates. The official
VOC2007 and COCO2014 runs read a fixed sample of COCO's 2017 train captions (`--caption-ids` with its repository's
coco_caption_text_embed_sampled_idx.pkl; without it every caption of --captions is used); the NUS-WIDE runs read
OpenImages' localized narratives, at most 1000 labelled ones per class (`--max-per-class`, its default there).

Model selection uses a validation split held out from the captions (mAP of the merged caption scores),
never the test images (the official code validates on every 10th test image). Speed: the caption
features do not depend on anything learned, so the corpus is encoded once (EOT-truncated, cached on
disk) and a step only encodes the 2·C class prompts; test image features are cached too.

    tinyprompt train taidpt --model RN50 --captions annotations/captions_train2017.json --classes coco \\
        --eval-data annotations/instances_val2014.json --eval-image-root val2014 --out runs/taidpt_coco
Outputs in --out: checkpoint.pt, prompt.pt, best.pt (best caption-val mAP), caption_report.txt,
metrics.json (per-epoch logs, caption statistics, and test mAP of the final and best prompts).
"""
import hashlib
import json
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from tinyprompt.commands.args import (REQUIRED, int_at_least, non_negative_float, positive_float,
                                      resolve_device)
from tinyprompt.commands.recipes import (FLAGS, TEXT_CHUNK_HELP, add_compile_arg, add_model_arg, add_run_args,
                                         add_sgd_args, prepare_out, text_chunk_arg, train_config)
from tinyprompt.data.captions import (label_captions, limit_per_class, read_caption_ids, read_captions,
                                     template_sentences)
from tinyprompt.data.classlists import get_class_list
from tinyprompt.data.datasets import DATASETS
from tinyprompt.data.datasets import load as load_dataset
from tinyprompt.data.features import cached_features, module_fingerprint
from tinyprompt.data.multilabel import read_multilabel
from tinyprompt.data.splits import Item
from tinyprompt.engine import is_main_process, train
from tinyprompt.hub import load
from tinyprompt.io import atomic_save, atomic_write, cache_dir
from tinyprompt.methods.taidpt import CaptionFeatures, TaIDPT, TaIDPTConfig, encode_captions, image_features
from tinyprompt.metrics import mean_average_precision
from tinyprompt.tokenizer import tokenize_for
from tinyprompt.transforms import clip_preprocess, model_preprocessing

NUS = "nuswide"
NUS_PER_CLASS = 1000  # the official NUS-WIDE reader's max_sample_per_cls (datasets/nuswide_distill.py)
CACHE_FORMAT = 1  # bump when the stored caption-feature layout changes
FIELDS = ("global_feats", "token_feats", "lengths", "offsets")


def add_args(parser) -> None:
    data = parser.add_argument_group("data")
    add_model_arg(data)
    data.add_argument("--captions", **REQUIRED, type=Path,
                      help="caption corpus: COCO captions .json, .jsonl (caption/text per line) or text (one per line)")
    data.add_argument("--classes", default="coco", help="class list: voc2007, coco, nuswide, or a synonym file "
                      "('class: synonym, ...' lines or JSON {class: [synonyms]})")  # fmt: skip
    data.add_argument("--caption-ids", type=Path, default=None,
                      help="train on these COCO caption annotation ids of --captions, in this order: the official "
                           "sample is the TaI-DPT repository's coco_caption_text_embed_sampled_idx.pkl with "
                           "captions_train2017.json (also a JSON list or one id per line); default all")  # fmt: skip
    data.add_argument("--max-captions", type=int_at_least(1), default=None,
                      help="use a random subset of this many captions (drawn with --seed); default all")
    data.add_argument("--max-per-class", type=int_at_least(0), default=None,
                      help="keep at most this many labelled captions per class, each counted for the rarest class it "
                           "names, in corpus order (None: the official 1000 for nuswide, no limit for the others; "
                           "0: no limit)")  # fmt: skip
    data.add_argument("--val-fraction", type=non_negative_float, default=0.05,
                      help="fraction of the labelled captions held out for model selection (0 = none)")
    data.add_argument("--photo-repeats", type=int_at_least(0), default=9,
                      help="copies of 'a photo of a {class}.' per class added to the training sentences")
    data.add_argument("--no-templates", action="store_true", help="add no template sentences (neither the photo "
                      "sentence nor the 80 ImageNet templates)")  # fmt: skip
    data.add_argument("--eval-data", type=Path, default=None, help="test images: COCO instances .json, VOC2007 "
                      "folder, NUS-WIDE folder, or a .csv/.jsonl label list")  # fmt: skip
    data.add_argument("--eval-image-root", type=Path, default=None, help="image folder of a COCO json / label list")
    data.add_argument("--eval-split", default=None, help="VOC / NUS-WIDE split (default test / Test)")
    data.add_argument("--eval-dataset", default=None, choices=[n for n, e in DATASETS.items() if e.multilabel],
                      help="instead of --eval-data: a registered multi-label dataset's test split (TaI-DPT's: VOC2007 "
                           "test, COCO2014 val, NUS-WIDE test) under --root")  # fmt: skip
    data.add_argument("--root", default=None, help="the data root holding --eval-dataset's folder")
    data.add_argument("--difficult", default="negative", choices=["negative", "ignore"],
                      help="VOC 'difficult'-only classes: negatives (official) or left out of the AP")
    data.add_argument("--seed", type=int_at_least(0), default=1, help="seeds the caption subset / split, init, training")
    data.add_argument("--out", type=Path, **REQUIRED, help="output folder (checkpoint.pt, prompt.pt, metrics.json)")
    prompt = parser.add_argument_group("prompt (TaI-DPT)")
    prompt.add_argument("--n-ctx", type=int_at_least(1), default=16, help="context vectors of each of the two prompts")
    prompt.add_argument("--temperature-image", type=positive_float, default=None,
                        help="softmax temperature over image locations; default 40, NUS-WIDE 4")
    prompt.add_argument("--text-chunk", type=text_chunk_arg, default=0,
                        help="class prompts per text-encoder pass (0 = all at once); " + TEXT_CHUNK_HELP)
    prompt.add_argument("--checkpoint-text", action="store_true", help="activation checkpointing of the prompt encoder")
    optim = parser.add_argument_group("optimisation (official TaI-DPT defaults)")
    add_sgd_args(optim, epochs=20, epochs_help="max epochs", batch_size=512, batch_help="sentences per step", lr=None,
                 lr_help="SGD learning rate; default 1e-4, NUS-WIDE 1e-3", learned="the contexts")  # fmt: skip
    run_ = parser.add_argument_group("run")
    run_.add_argument("--feature-dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                      help="storage of the cached caption features (float16 halves memory; compute stays fp32)")
    run_.add_argument("--eval-every", type=int_at_least(1), default=1, help="epochs between caption-val evaluations")
    run_.add_argument("--encode-batch-size", type=int_at_least(1), default=256, help="captions per encoder pass "
                      "(images: a quarter of it)")  # fmt: skip
    add_run_args(run_)
    add_compile_arg(run_)


def cached_caption_features(clip, tokens: torch.Tensor, batch_size: int, dtype=torch.float32) -> CaptionFeatures:
    """`encode_captions` once per (CLIP weights, token ids, storage dtype), kept under cache_dir()/captions/."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{dtype}|{module_fingerprint(clip)}|".encode())
    digest.update(tokens.contiguous().numpy().tobytes())
    path = cache_dir() / "captions" / f"{digest.hexdigest()}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            return CaptionFeatures(*(stored[k] for k in FIELDS))
        except Exception as e:  # a truncated or foreign file: recompute it
            warnings.warn(f"caption feature cache {path} is unreadable ({type(e).__name__}: {e}); recomputing it")
    feats = encode_captions(clip, tokens, batch_size)
    feats = CaptionFeatures(feats.global_feats.to(dtype), feats.token_feats.to(dtype), feats.lengths, feats.offsets)
    atomic_save({k: getattr(feats, k) for k in FIELDS}, path)
    return feats


def configs(args, classes, select: bool = True):
    """(TaIDPTConfig, TrainConfig) of a run: the flags, with the official per-dataset defaults filled in
    (lr 1e-4, test temperature 40; NUS-WIDE lr 1e-3, temperature 4). select: keep the best caption-val prompt."""
    nus = classes.name == NUS
    config = TaIDPTConfig(n_ctx=args.n_ctx, temperature_image=args.temperature_image or (4.0 if nus else 40.0),
                          text_chunk=args.text_chunk, checkpoint=args.checkpoint_text)  # fmt: skip
    run_config = train_config(args, lr=args.lr or (1e-3 if nus else 1e-4), eval_every=args.eval_every,
                              select_metric="val_map" if select else None, num_workers=0)  # batches of caption indices
    return config, run_config


def _sentences(args, classes):
    """(train texts, train labels, val texts, val labels, caption report) from the corpus and the templates."""
    if args.caption_ids is not None and args.max_captions is not None:
        raise ValueError("--caption-ids and --max-captions both choose the captions: pass one of them")
    ids = None if args.caption_ids is None else read_caption_ids(args.caption_ids)
    captions = read_captions(args.captions, ids=ids)
    generator = torch.Generator().manual_seed(args.seed)
    if args.max_captions is not None and args.max_captions < len(captions):
        captions = [captions[i] for i in sorted(torch.randperm(len(captions), generator=generator)[: args.max_captions].tolist())]
    max_words = 77 if classes.name == NUS else None  # the official NUS-WIDE reader labels the first 77 tokens
    kept, labels, report = label_captions(captions, classes.classnames, classes.synonyms, max_words=max_words)
    if not kept:
        raise ValueError(f"no caption in {args.captions} names a class of {classes.name!r}: check --classes")
    limit = args.max_per_class if args.max_per_class is not None else NUS_PER_CLASS if classes.name == NUS else 0
    if limit:  # the official NUS-WIDE corpus: OpenImages' narratives, at most 1000 per (rarest) class
        keep = limit_per_class(labels, limit)
        over, kept, labels = len(kept) - len(keep), [kept[i] for i in keep.tolist()], labels[keep]
        report = replace(report, kept=len(kept), per_class=labels.sum(0).tolist(), over_limit=over)
    order = torch.randperm(len(kept), generator=generator)
    n_val = min(len(kept) - 1, round(args.val_fraction * len(kept)))
    val, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    texts, targets = [kept[i] for i in train_idx.tolist()], labels[train_idx]
    if not args.no_templates:
        t_texts, t_labels = template_sentences(classes.classnames, photo_repeats=args.photo_repeats)
        texts, targets = texts + t_texts, torch.cat([targets, t_labels])
    return texts, targets, [kept[i] for i in val.tolist()], labels[val], report


def eval_features(clip, data, n_px, batch_size: int, workers: int, device):
    """(global (N, E), local (N, HW, E)) of the test images through the dense encoder, from the feature cache."""

    def encode(images):  # one flat row per image: cached_features stores (N, D) rows
        glob, local = image_features(clip, images)
        return torch.cat([glob[:, None], local], dim=1).flatten(1)  # (B, (1 + HW) E)

    items = [Item(path, 0, "") for path in data.paths]
    key = {"model": module_fingerprint(clip), "features": "taidpt.image_features"}
    preprocess = clip_preprocess(n_px, model_preprocessing(clip))
    flat = cached_features(encode, items, preprocess, key_parts=key, batch_size=batch_size, device=device,
                           num_workers=workers)[0]  # fmt: skip
    feats = flat.view(len(items), -1, clip.embed_dim)  # (N, 1 + HW, E)
    return feats[:, 0], feats[:, 1:]


@torch.no_grad()
def evaluate_map(model, glob, local, labels, ignore=None, columns=None, batch_size: int = 1024) -> dict:
    """mAP (%) of the global, local and merged scores of images (glob (N, E), local (N, HW, E)).

    columns: the model's class index of every label column (when the label set is a subset / reordered).
    """
    class_emb = model.class_embeddings()
    device = class_emb[0].device
    scores = {"global": [], "local": [], "merged": []}
    rate, temperature = model.config.merge_rate, model.config.temperature_image
    for start in range(0, len(glob), batch_size):
        g, l = glob[start : start + batch_size].to(device).float(), local[start : start + batch_size].to(device).float()
        logits_g, logits_l = model.logits(g, l, temperature, class_emb=class_emb)
        for name, s in (("global", logits_g), ("local", logits_l), ("merged", rate * logits_g + (1 - rate) * logits_l)):
            scores[name].append(s.cpu())
    out = {}
    for name, parts in scores.items():
        s = torch.cat(parts)
        s = s if columns is None else s[:, columns]
        out[f"map_{name}"] = mean_average_precision(s, labels, ignore)[0]
    return out


def run(args) -> int:
    if not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction {args.val_fraction}: use a fraction in [0, 1) of the labelled captions")
    device = resolve_device(args.device)
    classes = get_class_list(args.classes)
    test_data = columns = None
    if (args.eval_data is not None and args.eval_dataset is not None) or (args.eval_dataset is None) != (args.root is None):
        raise ValueError("pass --eval-data FILE, or --eval-dataset NAME with --root DATA (not both)")
    if args.eval_data is not None:  # read and matched to the classes first: a bad file fails before training
        test_data = read_multilabel(args.eval_data, args.eval_image_root, args.eval_split, args.difficult)
        columns = classes.align(test_data.classnames, f"--eval-data {args.eval_data}")
    elif args.eval_dataset is not None:
        given = {"--eval-split": args.eval_split, "--eval-image-root": args.eval_image_root,
                 "--difficult ignore": args.difficult == "ignore"}
        ignored = [flag for flag, value in given.items() if value]
        if ignored:
            raise ValueError(f"{', '.join(ignored)} apply to --eval-data; --eval-dataset {args.eval_dataset} is read "
                             f"as TaI-DPT reads it (its test split, VOC's difficult-only objects negative): drop them")
        test_data = load_dataset(args.eval_dataset, args.root)[0]["test"]
        columns = classes.align(test_data.classnames, f"--eval-dataset {args.eval_dataset}")
    prepare_out(args)
    texts, targets, val_texts, val_targets, report = _sentences(args, classes)
    # what defines the training data (labels follow from the texts and the synonyms), so that a --resume on other
    # data is refused
    fingerprint = {"classnames": classes.classnames, "synonyms": classes.synonyms, "train_texts": texts,
                   "val_texts": val_texts, "seed": args.seed}  # fmt: skip
    if is_main_process():
        print("[tinyprompt] " + report.format().replace("\n", "\n[tinyprompt] "))
        with atomic_write(args.out / "caption_report.txt", "w") as f:
            f.write(report.format() + "\n")
    torch.manual_seed(args.seed)  # the context init
    clip, _ = load(args.model, device=device, config=args.model_config)
    dtype = getattr(torch, args.feature_dtype)
    # captions longer than CLIP's 77 tokens (Localized Narratives) are cut, keeping the EOT
    train_feats = cached_caption_features(clip, tokenize_for(clip, texts, truncate=True), args.encode_batch_size, dtype).to(device)
    labels = targets.to(device)
    config, run_config = configs(args, classes, select=bool(len(val_texts)))
    model = TaIDPT(clip, classes.classnames, config)

    def loss_fn(model, idx, info):  # a batch is caption indices
        return model.caption_loss(train_feats, idx, labels[idx])

    eval_fn = None
    if len(val_texts):
        val_feats = cached_caption_features(clip, tokenize_for(clip, val_texts, truncate=True), args.encode_batch_size, dtype)

        def eval_fn(model):  # captions stand in for images here too, as in training (T = temperature_text)
            glob, local, mask = val_feats.batch(torch.arange(len(val_feats)))
            logits_g, logits_l = model.logits(glob.float().to(device), local.float().to(device),
                                              model.config.temperature_text, mask.to(device))  # fmt: skip
            merged = model.config.merge_rate * logits_g + (1 - model.config.merge_rate) * logits_l
            return {"val_map": mean_average_precision(merged.cpu(), val_targets)[0]}

    if is_main_process():
        print(f"[tinyprompt] TaI-DPT on {len(classes)} classes ({classes.name}): {len(texts)} training sentences, "
              f"{len(val_texts)} held-out captions; {args.epochs} epochs, lr {run_config.lr}")
    # the engine batches caption indices (a range is a map-style dataset); the loss gathers their features
    result = train(model, loss_fn, range(len(texts)), run_config, out_dir=args.out, resume=args.resume,
                   eval_fn=eval_fn, device=device, overwrite=args.overwrite, data_fingerprint=fingerprint,
                   flags=FLAGS)  # fmt: skip
    if is_main_process():
        _finish(model, clip, classes, args, report, result, test_data, columns, device)
    return 0


def _finish(model, clip, classes, args, report, result, data, columns, device) -> None:
    """Caption statistics and the test mAP of the final and best-val prompts, added to metrics.json."""
    metrics = json.loads((args.out / "metrics.json").read_text())
    metrics["captions"] = {"read": report.total, "kept": report.kept, "per_class": dict(zip(classes.classnames, report.per_class))}
    if data is not None:
        glob, local = eval_features(clip, data, clip.visual.input_resolution, max(1, args.encode_batch_size // 4),
                                    args.workers, device)
        test = {"final": evaluate_map(model, glob, local, data.labels, data.ignore, columns)}
        best = args.out / "best.pt"
        if result.get("best") is not None and best.is_file():
            model.load_prompt_state_dict(torch.load(best, map_location="cpu", weights_only=True))
            test["best_val"] = evaluate_map(model, glob, local, data.labels, data.ignore, columns)
        metrics["test"] = test
        for name, r in test.items():
            print(f"[tinyprompt] test {name}: mAP global {r['map_global']:.2f}  local {r['map_local']:.2f}  "
                  f"merged {r['map_merged']:.2f}")
    with atomic_write(args.out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
