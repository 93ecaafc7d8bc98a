"""POMP against the official code's outputs (golden files), DDP on 2 gloo processes, its data and commands.

Golden (README tolerances): every `pomp/loss_*.pt` and `pomp/prompt_*.pt` case in every stored margin
variant, with and without deduplicated positives; `pomp/degenerate_*.pt` (all classes + margin 0 is
CoOp; the literal K = N drops a class); `pomp/sampler.pt` (the official draw, bit for bit).
Run as a script (`python test_pomp.py OUT` under torchrun) this file is the DDP worker.
"""
import json
import os
import random
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddp import torchrun
from golden import GOLDEN, golden_params, load, needs_vocab
from tolerance import assert_rounding_close, steps_depth, text_depth
from tinyprompt import engine
from tinyprompt.clip import CLIP
from tinyprompt.clip_checkpoint import build_model
from tinyprompt.commands.cli import main
from tinyprompt.data.largelabel import ViewsDataset, large_label_items, read_class_list, read_class_names
from tinyprompt.data.splits import few_shot, folder_items
from tinyprompt.methods.coop import CoOp, CoOpConfig
from tinyprompt.methods.pomp import (POMP, NegativeSampler, POMPConfig, coop_prompt_state, margins, official_logits,
                                     official_loss, pomp_loss, sampled_columns, view_rows)  # fmt: skip
from tinyprompt.commands.recipes.pomp import loss_fn as recipe_loss_fn

# golden variant key -> POMPConfig.margin
VARIANTS = {"code": "official", "paper": "paper", "ln_adjusted": "ln_adjusted", "nomargin": "none"}
NAMES = ["golden_retriever", "tabby cat", "boeing 747", "st. bernard", "a (b)", "sea lion", "kite", "toucan"]
needs_tiny_vit = pytest.mark.skipif(not (GOLDEN / "clip" / "clip_tiny_vit.pt").is_file(),
                                    reason=f"no tiny CLIP under {GOLDEN}/clip")  # fmt: skip


def golden_entries(pattern: str, key: str):
    """One pytest param (path, name) per entry of `data[key]` (a dict's keys, a list's indices) of every golden
    file matching `pattern`, id `<file>-<name>`; golden_params' skipped param (with its reason) when absent."""
    params = []
    for param in golden_params(pattern):
        path = param.values[0]
        if path is None:
            params.append(pytest.param(None, None, id=param.id, marks=param.marks))
            continue
        entries = load(path)[key]
        names = list(entries) if isinstance(entries, dict) else range(len(entries))
        params.extend(pytest.param(path, name, id=f"{path.stem}-{name}") for name in names)
    return params


def margin_of(variant: str):
    assert variant in VARIANTS, f"golden margin variant {variant!r} has no POMPConfig.margin: add it to VARIANTS"
    return VARIANTS[variant]


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    return CLIP(16, 32, 1, 64, 16, 77, 49408, 32, 2, 2).eval()  # text width 32, embed 16


def golden_vit(logit_scale_log=None):
    clip = build_model(load(GOLDEN / "clip" / "clip_tiny_vit.pt")["state_dict"], "openai")  # OpenAI's CLIP code
    if logit_scale_log is not None:  # the _scale10 cases override CLIP's logit scale, nothing else
        with torch.no_grad():
            clip.logit_scale.fill_(logit_scale_log)
    return clip


def assert_grad_close(actual, expected, factor=5e-5):
    """The README's gradient tolerance: max abs diff <= factor x max abs of the expected gradient."""
    torch.testing.assert_close(actual, expected, atol=factor * expected.abs().max().item(), rtol=0)


def assert_logits_close(logits, expected, mask):
    """Unmasked logits within 1e-4; masked (collision) entries far below any real logit (< -1e5 or -inf)."""
    masked = torch.cat([torch.zeros(mask.shape[0], 1, dtype=torch.bool), mask], dim=1)
    torch.testing.assert_close(logits[~masked], expected[~masked], atol=1e-4, rtol=0)
    assert (logits[masked] < -1e5).all() and (expected[masked] < -1e5).all()


# ----------------------------------------------------------------------------- golden: sampler
@pytest.mark.parametrize("path, index", golden_entries("pomp/sampler.pt", "records"))
def test_golden_official_sampler_record(path, index):
    record = load(path)["records"][index]
    sampler = NegativeSampler(record["N"], record["K"], record["seed"], mode="official")
    draw = sampler(0)
    assert torch.equal(draw, record["neg_ids"])
    assert draw.unique().numel() == record["K"] - 1  # distinct, without replacement


@pytest.mark.parametrize("path", golden_params("pomp/sampler.pt"))
def test_golden_official_sampler_consecutive_steps(path):
    run = load(path)["consecutive"]
    sampler = NegativeSampler(run["N"], run["K"], run["seed"], mode="official")
    assert all(torch.equal(sampler(t), expected) for t, expected in enumerate(run["steps"]))
    # a restart at step 2 (fresh sampler) replays the stream: the same draw as the uninterrupted run
    assert torch.equal(NegativeSampler(run["N"], run["K"], run["seed"], mode="official")(2), run["steps"][2])


# ----------------------------------------------------------------------------- golden: loss level
@pytest.mark.parametrize("dedup", [True, False], ids=["dedup", "per_row"])
@pytest.mark.parametrize("path, variant", golden_entries("pomp/loss_*.pt", "variants"))
def test_golden_loss(path, variant, dedup):
    case = load(path)
    expected = case["variants"][variant]
    labels, neg_ids, scale = case["labels"], case["neg_ids"], case["logit_scale"]
    cols = sampled_columns(labels, neg_ids, dedup)
    assert torch.equal(cols.collisions, case["num_collisions"])
    assert torch.equal(cols.classes.unique(), expected["class_ids"])
    assert torch.equal(torch.cat([labels, neg_ids]), case["label_upd"])
    # the official text encoder gets B + K-1 rows; deduplicated, one row per distinct positive class
    want_rows = case["text_encoder_rows"] if not dedup else labels.unique().numel() + case["K"] - 1
    assert case["text_encoder_rows"] == case["B"] + case["K"] - 1 and cols.classes.numel() == want_rows
    margin = margins(margin_of(variant), case["N"], case["K"], cols.collisions)
    torch.testing.assert_close(margin.double(), expected["margin"], atol=1e-6, rtol=0)
    # the official formulation (materialised logits) reproduces the stored logits and their gradient
    logits = official_logits(case["image_features"], case["text_features_pos"], case["text_features_neg"], labels,
                             neg_ids, scale, margin).requires_grad_()  # fmt: skip
    assert_logits_close(logits.detach(), expected["logits"], case["mask"])
    F.cross_entropy(logits, torch.zeros_like(labels)).backward()
    assert_grad_close(logits.grad, expected["grad_logits"])
    # tinyprompt's fused loss, from the raw features: loss and every input gradient
    image = case["image_features_raw"].clone().requires_grad_()
    if dedup:  # one row per class (what a deduplicated text encoder returns); gradients are per class
        table = dict(zip(labels.tolist(), case["text_features_pos_raw"]))
        table.update(zip(neg_ids.tolist(), case["text_features_neg_raw"]))
        classes = torch.stack([table[c] for c in expected["class_ids"].tolist()]).requires_grad_()
        text = classes[torch.searchsorted(expected["class_ids"], cols.classes)]
    else:  # the official rows: one positive per image row, then the negatives
        text = torch.cat([case["text_features_pos_raw"], case["text_features_neg_raw"]]).requires_grad_()
    loss = pomp_loss(image, text, cols, scale, margin)
    torch.testing.assert_close(loss.detach(), expected["loss"], rtol=1e-5, atol=1e-6)
    loss.backward()
    assert_grad_close(image.grad, expected["grad_image_features_raw"])
    if dedup:
        assert_grad_close(classes.grad, expected["grad_class_features_raw"])
    else:
        n = labels.shape[0]
        assert_grad_close(text.grad[:n], expected["grad_text_features_pos_raw"])
        assert_grad_close(text.grad[n:], expected["grad_text_features_neg_raw"])


# ----------------------------------------------------------------------------- golden: prompt + full step
@needs_vocab
@needs_tiny_vit
@pytest.mark.parametrize("path, variant", golden_entries("pomp/prompt_*.pt", "variants"))
def test_golden_prompt_step(path, variant):
    case = load(path)
    clip = golden_vit(case["logit_scale_log"] if case["logit_scale_overridden"] else None)
    torch.testing.assert_close(clip.logit_scale.exp(), case["logit_scale"], rtol=0, atol=0)
    assert (case["n_ctx"], case["csc"], case["ctx_init"], case["class_token_position"]) == (4, False, "", "end")

    def model(**options):
        pomp = POMP(clip, case["classnames"], POMPConfig(n_ctx=4, k=case["K"], **options))
        with torch.no_grad():
            pomp.ctx.copy_(case["ctx"])  # the stored official init, instead of replaying its RNG
        return pomp

    full = model(full_length=True)  # all 77 positions, as the official PromptLearner returns them
    assert torch.equal(full.prompt.prompts.tokens, case["tokenized_prompts"])
    assert full.prompt.prompts.name_lens == case["name_lens"]
    torch.testing.assert_close(full.prompt.prompts.assemble(full.ctx, case["subset_ids"]), case["subset_prompts"],
                               atol=1e-7, rtol=0)  # fmt: skip
    with torch.no_grad():
        subset = model().prompt.prompts.encode(clip, case["ctx"], case["subset_ids"])
        image_features = clip.encode_image(case["images"].flatten(0, 1))  # view-major rows, as parse_batch_train
    torch.testing.assert_close(subset, case["subset_text_features"], atol=1e-5, rtol=0)
    torch.testing.assert_close(F.normalize(image_features, dim=-1), case["image_features"], atol=1e-5, rtol=0)
    labels = case["labels_per_image"].repeat(case["n_views"])
    assert torch.equal(labels, case["labels"])
    # the recipe's batch, (B, M, E) views of each image, gives the official rows (a reshape and a repeat)
    rows, row_labels = view_rows(image_features.unflatten(0, (case["n_views"], -1)).transpose(0, 1),
                                 case["labels_per_image"])  # fmt: skip
    assert torch.equal(rows, image_features) and torch.equal(row_labels, labels)
    B, margin, expected = case["B"], margin_of(variant), case["variants"][variant]
    assert case["text_encoder_rows"] == B + case["K"] - 1 and case["text_encoder_seq_len"] == 77
    for options in ({"dedup": True}, {"dedup": False, "text_chunk": 3}):
        pomp = model(margin=margin, **options)
        loss = pomp.loss(image_features, labels, case["neg_ids"])
        torch.testing.assert_close(loss.detach(), expected["loss"], rtol=1e-5, atol=1e-6)
        loss.backward()
        assert_grad_close(pomp.ctx.grad, expected["grad_ctx"])
        assert all(p.grad is None for name, p in pomp.named_parameters() if name != "prompt.ctx")
    # the official formulation from tinyprompt's text features of the B + K-1 rows: logits and row gradients
    pomp = model(margin=margin)
    raw = pomp.prompt.prompts.encode(clip, pomp.ctx, case["label_upd"])  # (B + K-1, E)
    raw.retain_grad()
    text = F.normalize(raw, dim=-1)
    torch.testing.assert_close(text.detach(), case["text_features_upd_norm"], atol=1e-5, rtol=0)
    m = margins(margin, case["N"], case["K"], case["num_collisions"])
    logits = official_logits(F.normalize(image_features, dim=-1), text[:B], text[B:], labels, case["neg_ids"],
                             clip.logit_scale.exp(), m)  # fmt: skip
    assert_logits_close(logits.detach(), expected["logits"], case["mask"])
    F.cross_entropy(logits, torch.zeros_like(labels)).backward()
    assert_grad_close(raw.grad, expected["grad_text_features_upd"])
    assert_grad_close(pomp.ctx.grad, expected["grad_ctx"])
    if margin == "official":  # the whole official step (the benchmark's baseline): 77 positions, B + K-1 prompts
        official = model(full_length=True)
        loss = official_loss(official, image_features, labels, case["neg_ids"])
        torch.testing.assert_close(loss.detach(), expected["loss"], rtol=1e-5, atol=1e-6)
        loss.backward()
        assert_grad_close(official.ctx.grad, expected["grad_ctx"])


# ----------------------------------------------------------------------------- golden: degenerate cases
def degenerate_margin(run) -> str:
    """The POMPConfig.margin of an official EPT run: the code's margin, or none without LOCAL_CORRECTION."""
    return "official" if run["LOCAL_CORRECTION"] else "none"


@pytest.mark.parametrize("path, tag", golden_entries("pomp/degenerate_loss_*.pt", "runs"))
def test_golden_degenerate_loss_level(path, tag):
    case = load(path)
    runs, labels, n = case["runs"], case["labels"], case["N"]
    run, coop = runs[tag], runs["coop"]
    scale = torch.tensor(case["logit_scale_log"], dtype=torch.float32).exp()
    image = case["image_features_raw"].clone().requires_grad_()
    classes = case["class_text_features_raw"].clone().requires_grad_()
    if not run["EPT"]:  # the official CoOp path: s · cos over all N classes, cross-entropy on the labels
        logits = scale * F.normalize(image, dim=-1) @ F.normalize(classes, dim=-1).t()
        torch.testing.assert_close(logits.detach(), run["logits"], atol=1e-4, rtol=0)
        loss = F.cross_entropy(logits, labels)
    else:
        assert run["UPDATE_CLASS_NUM"] == run["neg_ids"].numel() + 1
        cols = sampled_columns(labels, run["neg_ids"])
        assert torch.equal(cols.collisions, run["num_collisions"])
        m = margins(degenerate_margin(run), n, run["UPDATE_CLASS_NUM"], cols.collisions)
        torch.testing.assert_close(m.double(), run["margin"], atol=1e-6, rtol=0)
        loss = pomp_loss(image, classes[cols.classes], cols, scale, m)
    torch.testing.assert_close(loss.detach(), run["loss"], rtol=1e-5, atol=1e-6)
    loss.backward()
    assert_grad_close(image.grad, run["grad_image_features_raw"])
    assert_grad_close(classes.grad, run["grad_class_text_features_raw"])
    if tag == "pomp_literal_K_eq_N":  # one class missing from every row: not CoOp (quirk 4)
        assert run["dropped_class"] not in run["neg_ids"].tolist()
        assert abs(loss.item() - coop["loss"].item()) > 1e-4
    elif run["EPT"]:  # K = N + 1 draws every class, each row masks its own label, margin 0: CoOp
        assert sorted(run["neg_ids"].tolist()) == list(range(n)) and float(run["margin"].abs().max()) == 0
        torch.testing.assert_close(loss.detach(), coop["loss"], rtol=1e-5, atol=0)
        assert_grad_close(image.grad, coop["grad_image_features_raw"], 1e-5)
        assert_grad_close(classes.grad, coop["grad_class_text_features_raw"], 1e-5)


def test_sampler_with_k_n_plus_1_draws_every_class():
    assert sorted(NegativeSampler(100, 101, seed=5)(0).tolist()) == list(range(100))


@needs_vocab
@needs_tiny_vit
@pytest.mark.parametrize("path, tag", golden_entries("pomp/degenerate_tiny_vit.pt", "runs"))
def test_golden_degenerate_tiny_vit(path, tag):
    case = load(path)
    clip, runs, run = golden_vit(), case["runs"], case["runs"][tag]
    coop = CoOp(clip, case["classnames"], CoOpConfig(n_ctx=case["n_ctx"]))
    with torch.no_grad():
        coop.ctx.copy_(case["ctx"])
    coop_loss = F.cross_entropy(coop(case["images"]), case["labels"])
    coop_loss.backward()
    torch.testing.assert_close(coop_loss.detach(), runs["coop"]["loss"], rtol=1e-5, atol=0)
    assert_grad_close(coop.ctx.grad, runs["coop"]["grad_ctx"])
    if not run["EPT"]:
        return  # the CoOp run itself, checked above
    with torch.no_grad():
        image_features = clip.encode_image(case["images"])
    config = POMPConfig(n_ctx=case["n_ctx"], k=run["UPDATE_CLASS_NUM"], margin=degenerate_margin(run))
    pomp = POMP(clip, case["classnames"], config)
    with torch.no_grad():
        pomp.ctx.copy_(case["ctx"])
    loss = pomp.loss(image_features, case["labels"], run["neg_ids"])
    loss.backward()
    torch.testing.assert_close(loss.detach(), run["loss"], rtol=1e-5, atol=1e-6)
    assert_grad_close(pomp.ctx.grad, run["grad_ctx"])
    if tag == "pomp_literal_K_eq_N":
        assert run["dropped_class"] not in run["neg_ids"].tolist() and abs(loss.item() - coop_loss.item()) > 1e-4
    else:  # all classes, margin 0: CoOp's loss and context gradient
        torch.testing.assert_close(loss.detach(), coop_loss.detach(), rtol=1e-5, atol=0)
        assert_grad_close(pomp.ctx.grad, coop.ctx.grad, 1e-5)


# ----------------------------------------------------------------------------- edge cases, sampler, config
def test_k2_collision_row_has_zero_loss_not_nan():
    torch.manual_seed(0)
    image, classes = torch.randn(2, 8, requires_grad=True), torch.randn(10, 8, requires_grad=True)
    labels, neg_ids = torch.tensor([3, 5]), torch.tensor([3])  # K = 2: row 0's only negative is its own label
    cols = sampled_columns(labels, neg_ids)
    m = margins("official", 10, 2, cols.collisions)
    assert m[0] == 0 and m[1] == pytest.approx(np.log10(9) - np.log10(1))  # official: -log10(0) = inf, then NaN
    losses = []
    for reduction_rows in (slice(None), slice(1, 2)):  # the whole batch, and row 1 alone
        sub = sampled_columns(labels[reduction_rows], neg_ids)
        losses.append(pomp_loss(image[reduction_rows], classes[sub.classes], sub, 100.0, m[reduction_rows]))
    assert torch.isfinite(losses[0])
    torch.testing.assert_close(losses[0], losses[1] / 2)  # row 0 adds exactly 0 to the mean
    losses[0].backward()
    assert torch.isfinite(classes.grad).all() and image.grad[0].abs().sum() == 0  # row 0 trains nothing


@needs_vocab
def test_text_side_does_not_grow_with_n():
    """A step encodes the P + K-1 prompts of its classes, in chunks of at most text_chunk rows, each only up to
    its longest EOT: the same text-encoder work (so the same activation memory) for N = 8 and N = 3,000.
    What is held for all N classes is their token ids (integers, O(N * L)), never an (N, L, width) float
    table of token embeddings: those are looked up per chunk, the same lookups for any N."""
    labels, neg_ids = torch.tensor([0, 1, 1, 5, 0, 1]), torch.tensor([2, 5, 7, 3])  # P = 3 (0, 1, 5), K-1 = 4
    features = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    work, lookups, losses, grads = {}, {}, {}, {}
    for n in (8, 3000):
        clip = tiny_clip()
        pomp = POMP(clip, NAMES + [f"thing {i}" for i in range(n - len(NAMES))], POMPConfig(n_ctx=4, k=5, text_chunk=2))
        buffers = [b for b in pomp.buffers() if not any(b is c for c in clip.buffers())]  # POMP's own, not CLIP's
        assert buffers and all(not b.is_floating_point() for b in buffers)
        assert sum(b.numel() * b.element_size() for b in buffers) < n * pomp.prompt.prompts.length * 8
        shapes, lookups[n] = [], []  # (rows, positions) of every text-transformer block input: the activation sizes
        record = lambda module, args, out: shapes.append(args[0].shape[:2])  # noqa: E731
        lookup = lambda module, args, out: lookups[n].append(out.shape)  # noqa: E731  (rows, positions, width)
        hooks = [clip.transformer.resblocks[0].mlp.register_forward_hook(record),
                 clip.token_embedding.register_forward_hook(lookup)]  # fmt: skip
        loss = pomp.loss(features, labels, neg_ids)
        work[n] = list(shapes)
        loss.backward()
        for hook in hooks:
            hook.remove()
        losses[n], grads[n] = loss.detach(), pomp.ctx.grad
    assert work[8] == work[3000] and lookups[8] == lookups[3000]
    assert max(rows for rows, _, _ in lookups[3000]) <= 2  # fixed embeddings of one chunk at a time
    assert work[8][0] == (1, 5)  # the shared SOS + 4 context vectors, once per step (not once per chunk)
    own = work[8][1:]
    assert sum(rows for rows, _ in own) == 6  # classes {0, 1, 5} + {2, 5, 7, 3}, each encoded once
    assert max(rows for rows, _ in own) <= 2 and max(length for _, length in own) < 20  # chunked, truncated at EOT
    # the margin depends on N (so the loss does), the text work does not
    assert not torch.equal(losses[8], losses[3000]) and torch.isfinite(grads[3000]).all()


def test_sampler_per_step_and_per_rank():
    sampler = NegativeSampler(50, 11, seed=3)
    draw = sampler(7, 1)
    assert draw.shape == (10,) and draw.unique().numel() == 10 and 0 <= draw.min() and draw.max() < 50
    assert torch.equal(draw, NegativeSampler(50, 11, seed=3)(7, 1))  # a restart draws the same negatives
    assert not torch.equal(draw, sampler(7, 0)) and not torch.equal(draw, sampler(8, 1))
    shared = NegativeSampler(50, 11, seed=3, per_rank=False)
    assert torch.equal(shared(7, 0), shared(7, 1))
    counts = torch.bincount(torch.cat([sampler(t) for t in range(500)]), minlength=50).float()
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()  # uniform over all classes
    official = NegativeSampler(50, 11, seed=3, mode="official")
    assert not torch.equal(official(0, 0), official(0, 1))  # rank >= 1 gets its own stream
    with pytest.raises(ValueError, match="2 <= k <= n_cls \\+ 1"):
        NegativeSampler(5, 7)
    with pytest.raises(ValueError, match="mode"):
        NegativeSampler(5, 3, mode="hard")
    with pytest.raises(ValueError, match="distinct"):
        sampled_columns(torch.tensor([0, 1]), torch.tensor([2, 2]))


def test_config_validation():
    for bad, match in ((dict(k=1), "k = 1"), (dict(margin="log10"), "margin"), (dict(margin=float("inf")), "margin"),
                       (dict(sampler="easy"), "sampler"), (dict(class_token_position="back"), "class_token_position"),
                       (dict(n_ctx=0), "n_ctx"), (dict(sampler_seed=-1), "sampler_seed")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            POMPConfig(**bad)
    assert margins(0.5, 100, 8, torch.tensor([0, 1])).tolist() == [0.5, 0.5]


@needs_vocab
def test_prompt_transfers_to_any_class_list_and_initialises_coop():
    clip = tiny_clip()
    torch.manual_seed(1)
    pomp = POMP(clip, NAMES, POMPConfig(n_ctx=4, k=6, margin="official"))
    state = pomp.prompt_state_dict()
    assert state["method"] == "pomp" and state["ctx"].shape == (4, 32) and state["config"]["k"] == 6
    other = ["dog", "cat"]  # fewer classes than k: fine for inference
    loaded = POMP.from_prompt_state_dict(clip, other, state, text_chunk=1)
    coop = CoOp.from_prompt_state_dict(clip, other, coop_prompt_state(state))
    with torch.no_grad():
        # text_chunk=1 encodes each prompt alone, CoOp all at once: the same sums, reordered
        assert_rounding_close(loaded.text_features(), coop.text_features(), *text_depth(clip))
    assert torch.equal(coop.ctx, pomp.ctx) and coop.config.n_ctx == 4 and not coop.config.csc
    with pytest.raises(ValueError, match="needs? 2 <= k"):
        loaded.negatives(0)
    with pytest.raises(ValueError, match="not POMP"):
        pomp.load_prompt_state_dict(coop.prompt_state_dict())
    with pytest.raises(ValueError, match="only .* can be changed"):
        POMP.from_prompt_state_dict(clip, other, state, k=3)
    with pytest.raises(ValueError, match="n_ctx differs"):
        POMP(clip, NAMES, POMPConfig(n_ctx=2)).load_prompt_state_dict(state)


# ----------------------------------------------------------------------------- DDP (2 gloo processes)
def ddp_run(out):
    """Train a POMP on 8 images x 2 views for one epoch of 2 steps (global batch 4), negatives shared by the ranks."""
    rank, world = engine.distributed_info()
    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(2, 8, 16, generator=g), torch.tensor([0, 1, 1, 2, 3, 3, 4, 5])
    pomp = POMP(tiny_clip(), NAMES, POMPConfig(n_ctx=4, k=5, text_chunk=3, per_rank_negatives=False))
    negatives = []

    def loss_fn(model, batch, info):
        negatives.append(model.negatives(info.global_step, info.rank).tolist())
        return recipe_loss_fn(model, batch, info)

    config = engine.TrainConfig(max_epoch=1, batch_size=4 // world, lr=0.5, warmup_epochs=0, log_every=100, seed=0)
    engine.train(pomp, loss_fn, ViewsDataset(features, labels, 2, seed=0), config)
    os.makedirs(out, exist_ok=True)
    torch.save({"ctx": pomp.ctx.detach(), "negatives": negatives}, os.path.join(out, f"world{world}_rank{rank}.pt"))


@needs_vocab
def test_ddp_two_processes_equal_one_process(tmp_path):
    ddp_run(str(tmp_path / "single"))  # this process: world 1, batches of 4
    done = torchrun(lambda out: [__file__, str(out)], tmp_path / "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    single, *ranks = (torch.load(tmp_path / name, weights_only=True)
                      for name in ("single/world1_rank0.pt", "ddp/world2_rank0.pt", "ddp/world2_rank1.pt"))  # fmt: skip
    assert single["negatives"] == ranks[0]["negatives"] == ranks[1]["negatives"] and len(single["negatives"]) == 2
    start = POMP(tiny_clip(), NAMES, POMPConfig(n_ctx=4)).ctx.detach()
    update = single["ctx"] - start
    assert update.abs().max() > 1e-4  # the steps moved the context
    for rank in ranks:
        # two ranks sum the gradient in another order: equal up to the rounding of the steps through the text tower
        k, depth = text_depth(tiny_clip(), backward=True)
        assert_rounding_close(rank["ctx"] - start, update, k, steps_depth(depth, len(single["negatives"])))


# ----------------------------------------------------------------------------- data: large label spaces
def write_images(root, counts, rng):
    from PIL import Image

    for wnid, count in counts.items():
        (root / wnid).mkdir(parents=True)
        for i in range(count):
            pixels = bytes(rng.randrange(256) for _ in range(40 * 36 * 3))
            Image.frombytes("RGB", (40, 36), pixels).save(root / wnid / f"{i}.png")
        (root / wnid / "notes.txt").write_text("not an image")


def test_class_name_files(tmp_path):
    names = tmp_path / "names.tsv"
    names.write_text("n02\tgolden_retriever\nn01\tdog, domestic dog\n\nn09\tunused\n")
    assert read_class_names(names) == {"n02": "golden retriever", "n01": "dog, domestic dog", "n09": "unused"}
    assert read_class_list(names) == ["golden retriever", "dog, domestic dog", "unused"]
    plain = tmp_path / "plain.txt"
    plain.write_text("tabby_cat\n\nboeing 747\n")
    assert read_class_list(plain) == ["tabby cat", "boeing 747"]
    for text, match in (("n01 dog\n", "line 1: 'n01 dog' is not 'wnid<TAB>name'"), ("n01\t\n", "line 1"),
                        ("n01\tdog\nn01\tcat\n", "line 2: 'n01' is listed twice"), ("\n", "empty")):  # fmt: skip
        names.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_class_names(names)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_class_names(tmp_path / "missing.tsv")


def test_large_label_items_cap_is_coops_few_shot_draw(tmp_path):
    pytest.importorskip("PIL.Image", reason="writing test images needs Pillow")
    root = tmp_path / "in21k"
    write_images(root, {"n03": 5, "n01": 2, "n02": 4}, random.Random(0))
    names = tmp_path / "names.tsv"
    names.write_text("n01\tgolden_retriever\nn02\ttabby cat\nn03\tkite\nn04\tnot on disk\n")
    items, classnames = large_label_items(root, names, images_per_class=3, seed=7)
    assert classnames == ["golden retriever", "tabby cat", "kite"]  # sorted folders, names from the file
    assert [sum(item.label == c for item in items) for c in range(3)] == [2, 3, 3]
    assert all(item.classname == classnames[item.label] and item.path.endswith(".png") for item in items)
    expected = few_shot(folder_items(root), 3, seed=7)  # the whole list through CoOp's draw: the same picks
    assert [(item.path, item.label) for item in items] == [(item.path, item.label) for item in expected]
    everything, _ = large_label_items(root, None, images_per_class=0)
    assert len(everything) == 11 and everything[0].classname == "n01"
    names.write_text("n01\tdog\nn02\tcat\n")
    with pytest.raises(ValueError, match="no name for 1 class folder.*n03"):
        large_label_items(root, names)
    (root / "n05").mkdir()
    with pytest.raises(ValueError, match="n05 has no image files"):
        large_label_items(root, None)
    with pytest.raises(ValueError, match="images_per_class"):
        large_label_items(root, None, images_per_class=-1)


def test_views_dataset_serves_distinct_seeded_views():
    features = torch.arange(4 * 3 * 2, dtype=torch.float32).reshape(4, 3, 2)  # (V, N, E): value encodes (v, n)
    data = ViewsDataset(features, [0, 1, 2], views_per_item=3, seed=1)
    x, y = data[1]
    views = (x[:, 0] - 2) // 6  # feature[v, 1, 0] = 6 v + 2
    assert x.shape == (3, 2) and y == 1 and views.unique().numel() == 3
    first = data.view.clone()
    data.set_epoch(1)
    changed = not torch.equal(first, data.view)
    data.set_epoch(0)
    assert changed and torch.equal(first, data.view)
    with pytest.raises(ValueError, match="V >= views_per_item"):
        ViewsDataset(features, [0, 1, 2], views_per_item=5)


# ----------------------------------------------------------------------------- commands end to end
@needs_vocab
@needs_tiny_vit
def test_train_eval_export_end_to_end(tmp_path):
    pytest.importorskip("PIL.Image", reason="the image data path needs Pillow")
    root = tmp_path / "in21k"
    write_images(root, {"n01": 3, "n02": 3, "n03": 3, "n04": 3}, random.Random(1))
    names = tmp_path / "names.tsv"
    names.write_text("n01\tgolden_retriever\nn02\ttabby cat\nn03\tkite\nn04\tsea_lion\n")
    model = tmp_path / "tiny_vit.pt"
    torch.save(load(GOLDEN / "clip" / "clip_tiny_vit.pt")["state_dict"], model)
    out = tmp_path / "run"
    assert main(["train", "pomp", "--model", str(model), "--data", str(root), "--classes", str(names), "--shots", "2",
                 "--out", str(out), "--epochs", "2", "--n-ctx", "4", "--k", "3", "--margin", "official", "--views", "3",
                 "--views-per-step", "2", "--batch-size", "4", "--text-chunk", "2", "--device", "cpu"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["steps"] for e in metrics["epochs"]] == [2, 2] and [e["lr"] for e in metrics["epochs"]] == [1e-5, 0.002]
    config = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    assert {k: config[k] for k in ("optimizer", "lr", "momentum", "weight_decay", "scheduler", "warmup_epochs",
                                   "warmup_lr", "batch_size")} == \
        {"optimizer": "sgd", "lr": 0.002, "momentum": 0.9, "weight_decay": 5e-4, "scheduler": "cosine",
         "warmup_epochs": 1, "warmup_lr": 1e-5, "batch_size": 4}  # fmt: skip
    state = torch.load(out / "prompt.pt", weights_only=True)
    assert state["method"] == "pomp" and state["ctx"].shape == (4, 64) and state["config"]["margin"] == "official"
    assert state["classnames"] == ["golden retriever", "tabby cat", "kite", "sea lion"]

    result = tmp_path / "eval.json"
    assert main(["eval", "--prompt", str(out / "prompt.pt"), "--model", str(model), "--data", str(root),
                 "--classes", str(names), "--output", str(result), "--device", "cpu"]) == 0  # fmt: skip
    evaluated = json.loads(result.read_text())
    assert evaluated["images"] == 12 and evaluated["classes"] == 4
    clip = golden_vit()
    coop = CoOp.from_prompt_state_dict(clip, state["classnames"], coop_prompt_state(state))  # POMP -> CoOp init
    from tinyprompt.commands.evaluate import accuracy_of_features
    from tinyprompt.transforms import clip_preprocess
    from tinyprompt.data.features import encode_images

    items = folder_items(root)
    features = encode_images(clip.encode_image, items, clip_preprocess(32))
    direct = accuracy_of_features(coop, features, [item.label for item in items])
    assert evaluated["top1"] == pytest.approx(direct["top1"])

    classes = tmp_path / "lvis.txt"
    classes.write_text("dog\ncat\nboeing_747\n")
    emb_path = tmp_path / "emb.npy"
    assert main(["export-classifier", "--prompt", str(out / "checkpoint.pt"), "--model", str(model), "--classes",
                 str(classes), "--out", str(emb_path), "--device", "cpu"]) == 0  # fmt: skip
    emb = np.load(emb_path)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    assert_rounding_close(torch.from_numpy(np.linalg.norm(emb, axis=1)), torch.ones(3), k=emb.shape[1])  # a norm
    with torch.no_grad():
        expected = F.normalize(POMP.from_prompt_state_dict(clip, ["dog", "cat", "boeing 747"], state).text_features())
    k, depth = text_depth(clip)  # the command encodes the classes in its own chunks: equal up to rounding
    assert_rounding_close(torch.from_numpy(emb), expected, k, depth + 1)
    with pytest.raises(ValueError, match="use a .npy file name"):
        main(["export-classifier", "--prompt", str(out / "prompt.pt"), "--model", str(model), "--classes", str(classes),
              "--out", str(tmp_path / "emb.txt")])  # fmt: skip
    with pytest.raises(ValueError, match="--k 9 needs at least 8 classes"):
        main(["train", "pomp", "--model", str(model), "--data", str(root), "--out", str(tmp_path / "bad"), "--k", "9"])


def test_train_pomp_official_defaults():
    from tinyprompt.commands.cli import build_parser
    from tinyprompt.commands.recipes.pomp import EPOCHS_BY_N_CTX

    args = build_parser().parse_args(["train", "pomp", "--model", "ViT-B/16", "--data", "d", "--out", "o"])
    official = (16, 1000, "paper", 16, 32, 4, 0.002, 0.9, 5e-4, 1, 1e-5)
    assert (args.n_ctx, args.k, args.margin, args.shots, args.batch_size, args.views_per_step, args.lr, args.momentum,
            args.weight_decay, args.warmup_epochs, args.warmup_lr) == official  # fmt: skip
    assert args.epochs is None and EPOCHS_BY_N_CTX == {4: 5, 16: 20}  # n_ctx 16: 20 epochs, n_ctx 4: 5


if __name__ == "__main__":  # the DDP worker: torchrun --nproc-per-node 2 test_pomp.py OUT
    torch.set_num_threads(1)
    ddp_run(sys.argv[1])
