"""SHIP against the official code's outputs (golden files), its gradient contracts, and `tinyprompt train ship`.

Golden (README tolerances): every `ship/ship_vae_step_*.pt` (intermediates 1e-6, features 1e-5, losses
rtol 1e-5, gradients 1e-5 · max|ref|, parameters after AdamW 1e-6), `ship/ship_synthesis_*.pt`,
`ship/ship_coop_step_*.pt` (logits 1e-4, grad_ctx 2e-5 · max|ref|) and `ship/ship_protocol.pt` (exact).
Each file's variant (ReLU / LeakyReLU decoder) and sizes come from its `meta`; stored weights are injected.
"""
import inspect
import json
import random
from pathlib import Path

import pytest
import torch

from golden import GOLDEN, golden_params, load, needs_vocab
from tolerance import adam_first_step_bound, assert_rounding_close, assert_within, text_depth
from tinyprompt.commands.cli import main
from tinyprompt.clip import CLIP
from tinyprompt.clip_checkpoint import build_model
from tinyprompt.data.splits import Item
from tinyprompt.engine import TrainConfig, build_optimizer
from tinyprompt.methods.coop import CoOp, CoOpConfig
from tinyprompt.methods.ship import (VARIANTS, SHIPConfig, SHIPGenerator, base_new_accuracy, coop_loss, finetune_loss,
                                     mix_synthetic, relabel, ship_logits, split_base_new)  # fmt: skip
from tinyprompt.metrics import harmonic_mean
from tinyprompt.commands.recipes.ship import SETTINGS
from tinyprompt.prompts import ClassPrompts
from tinyprompt.tokenizer import tokenize

_CLIPS = {}


def golden_clip(meta) -> CLIP:
    name = meta["backbone"]
    if name not in _CLIPS:
        _CLIPS[name] = build_model(load(GOLDEN / "clip" / name)["state_dict"], "openai")  # OpenAI's CLIP code
    return _CLIPS[name]


def generator_from_case(case, classnames, **options) -> SHIPGenerator:
    """The generator of a golden file: variant and sizes from its meta, weights and context injected."""
    meta = case["meta"]
    variant = {"relu": "default", "leaky_relu": "imagenet"}[meta["gen_activation"]]
    assert meta["leaky_slope"] == VARIANTS[variant]["leaky_slope"] and meta["n_ctx"] == 4 and meta["kl_weight"] == 1
    config = SHIPConfig(variant=variant, enc_hidden=meta["enc_hidden"], gen_hidden=meta["gen_hidden"], **options)
    generator = SHIPGenerator(golden_clip(meta), classnames, config)
    assert generator.latent_dim == meta["latent_dim"]
    if "enc_state" in case:
        generator.encoder.load_state_dict(case["enc_state"])
    generator.decoder.load_state_dict(case["gen_state"])
    with torch.no_grad():
        generator.ctx.copy_(case["ctx"])
    return generator


def official_optimizer(settings) -> TrainConfig:
    """The TrainConfig of an official optimiser dict (`name` or the file's key, lr, and what it sets); what the
    dict leaves out takes torch.optim's own default for that optimiser, as the official code constructs it."""
    name = settings.get("name", "adamw").lower()
    defaults = {k: p.default for k, p in inspect.signature(OPTIMIZERS[name]).parameters.items()}
    fields = ("momentum", "weight_decay") if name == "sgd" else ("betas", "eps", "weight_decay")
    return TrainConfig(optimizer=name, lr=settings["lr"], **{f: settings.get(f, defaults[f]) for f in fields})


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def step_bound(config: TrainConfig, ref_grad, grad_error):
    """Per entry, how far the first optimiser step can move a parameter whose gradient is known to grad_error:
    SGD's first step is lr · (g + wd · p) (momentum starts at g), Adam's is bounded in tests/tolerance.py."""
    if config.optimizer == "sgd":
        return config.lr * grad_error
    return adam_first_step_bound(ref_grad, grad_error, config.lr, config.eps)


def close(actual, expected, atol):
    torch.testing.assert_close(actual.detach(), expected, atol=atol, rtol=0)


def max_abs(tensor) -> float:
    return float(tensor.abs().max())


def close_rel(actual, expected, rel):
    torch.testing.assert_close(actual.detach(), expected, atol=rel * max_abs(expected), rtol=0)


@needs_vocab
@pytest.mark.parametrize("path", golden_params("ship/ship_vae_step_*.pt"))
@pytest.mark.parametrize("options", [{}, {"full_length": True}, {"text_chunk": 3}], ids=["truncated", "full", "chunked"])
def test_golden_vae_step(path, options):
    case = load(path)
    generator = generator_from_case(case, case["classnames"], **options).train()
    assert torch.equal(generator.prompts.tokens, case["tokenized_prompts"])
    assert torch.equal(generator.prompts.eot_index, case["eot_index"])
    out = generator(case["image_features"], case["target"], eps=case["eps"])
    out["bias"].retain_grad()
    for key in ("mu", "logvar", "std", "z", "bias"):
        close(out[key], case[key], 1e-6)
    ctx_shifted = generator.ctx[None] + out["bias"][:, None]
    close(ctx_shifted, case["ctx_shifted"], 1e-6)
    full = ClassPrompts(generator.clip, case["classnames"], 4, full_length=True)  # all 77 rows, as stored
    close(full.assemble(ctx_shifted.detach(), case["target"]), case["prompts"], 1e-6)
    close(out["raw_features"], case["rec_features_unnorm"], 1e-5)
    close(out["features"], case["rec_features"], 1e-5)
    for key, ref in (("loss_recon", "rec_loss"), ("loss_kl", "kl_loss"), ("loss", "loss")):
        torch.testing.assert_close(out[key].detach(), case[ref], rtol=1e-5, atol=0)
    per_sample = (out["features"] - case["image_features"]).pow(2).sum(1)
    torch.testing.assert_close(per_sample.detach(), case["rec_per_sample"], rtol=1e-5, atol=1e-6)

    # one step of the official optimiser: AdamW over encoder, decoder and context only
    named = {**{f"enc.{n}": p for n, p in generator.encoder.named_parameters()},
             **{f"gen.{n}": p for n, p in generator.decoder.named_parameters()}, "ctx": generator.ctx}  # fmt: skip
    assert set(named) == set(case["grads"])
    trainable = [p for p in generator.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in named.values()}  # CLIP is frozen
    config = official_optimizer(case["adamw"])
    optimizer = build_optimizer(trainable, config)
    out["loss"].backward()
    assert all(p.grad is None for p in generator.clip.parameters())
    for key, p in named.items():
        close_rel(p.grad, case["grads"][key], 1e-5)
    close_rel(out["bias"].grad, case["grad_bias"], 1e-5)
    optimizer.step()
    for key, p in named.items():  # 1e-6 (README) plus how far the gradient's tolerance can move the step
        ref_grad = case["grads"][key]
        assert_within(p, case["after_adamw_step"][key], 1e-6 + step_bound(config, ref_grad, 1e-5 * max_abs(ref_grad)), key)


@needs_vocab
@pytest.mark.parametrize("path", golden_params("ship/ship_synthesis_*.pt"))
def test_golden_synthesis(path):
    case = load(path)
    generator = generator_from_case(case, case["all_classnames"])
    assert case["all_classnames"] == case["base_classnames"] + case["new_classnames"]
    assert torch.equal(generator.prompts.tokens, case["tokenized_prompts"])
    assert int(case["gen_target"].min()) >= case["n_base"]
    with torch.no_grad():
        bias = generator.decoder(case["z"])
        close(bias, case["bias"], 1e-6)
        full = ClassPrompts(generator.clip, case["all_classnames"], 4, full_length=True)
        close(full.assemble(generator.ctx[None] + bias[:, None], case["gen_target"]), case["prompts"], 1e-6)
        close(generator.encode(bias, case["gen_target"]), case["syn_features_unnorm"], 1e-5)
    features = generator.synthesize(case["gen_target"], case["z"])
    close(features, case["syn_features"], 1e-5)
    assert not features.requires_grad  # no graph back into the generator
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(len(features)), atol=1e-6, rtol=0)
    torch.manual_seed(0)  # the prior draw: unit norm too, one row per label
    drawn = generator.synthesize(torch.tensor([6, 7, 8, 9, 9]))
    assert drawn.shape == (5, generator.latent_dim)
    torch.testing.assert_close(drawn.norm(dim=-1), torch.ones(5), atol=1e-6, rtol=0)


@needs_vocab
@pytest.mark.parametrize("path", golden_params("ship/ship_coop_step_*.pt"))
def test_golden_coop_step(path):
    case = load(path)
    coop_case, clip = case["coop"], golden_clip(case["meta"])
    assert (coop_case["ctx_init"], coop_case["n_ctx"], coop_case["class_token_position"], coop_case["csc"]) == \
        ("a photo of a", 4, "end", False)  # fmt: skip
    names, n_base = case["all_classnames"], case["n_base"]
    model = CoOp(clip, names, CoOpConfig(n_ctx=4, ctx_init=coop_case["ctx_init"])).train()
    close(model.ctx, case["coop_ctx_init"], 0)
    assert torch.equal(model.prompts.tokens, case["coop_tokenized_prompts"])
    assert torch.equal(model.prompts.eot_index, case["coop_eot_index"])
    full = ClassPrompts(clip, names, 4, placeholder="a photo of a", full_length=True)
    close(full.assemble(model.ctx.detach()), case["coop_prompts"], 1e-6)
    with torch.no_grad():
        text = model.text_features()
        close(text / text.norm(dim=-1, keepdim=True), case["text_features"], 1e-5)
        hard = clip.encode_text(tokenize([f"a photo of a {n.replace('_', ' ')}." for n in names]))
        close(hard / hard.norm(dim=-1, keepdim=True), case["text_features_hard_prompt"], 1e-5)

    # the mixed batch, rebuilt from the synthesis file when it is there: real first, then synthetic
    synthesis = path.with_name(path.name.replace("coop_step", "synthesis"))
    generator = None
    if synthesis.is_file():
        syn_case = load(synthesis)
        generator = generator_from_case(syn_case, names)
        features, target = mix_synthetic(generator, case["real_features"], case["real_target"], n_base,
                                         syn_labels=syn_case["gen_target"], z=syn_case["z"])  # fmt: skip
        close(features, case["features"], 1e-5)
        assert torch.equal(target, case["target"]) and torch.equal(case["syn_target"], syn_case["gen_target"])
    close(ship_logits(case["features"], text), case["logits"], 1e-4)

    config = official_optimizer(coop_case["optimizer"])  # SGD (10 datasets) or AdamW (the ImageNet variant)
    optimizer = build_optimizer([model.ctx], config)
    loss = coop_loss(model, case["features"], case["target"])
    torch.testing.assert_close(loss.detach(), case["loss"], rtol=1e-5, atol=0)
    loss.backward()
    close_rel(model.ctx.grad, case["grad_ctx"], 2e-5)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "ctx")
    optimizer.step()
    bound = 1e-6 + step_bound(config, case["grad_ctx"], 2e-5 * max_abs(case["grad_ctx"]))
    assert_within(model.ctx, case["ctx_after_step"], bound, "ctx_after_step")

    perturbed = case["perturbed"]
    with torch.no_grad():
        model.ctx.copy_(perturbed["ctx"])
        text = model.text_features()
        close(text / text.norm(dim=-1, keepdim=True), perturbed["text_features"], 1e-5)
    close(ship_logits(case["features"], text), perturbed["logits"], 1e-4)
    model.ctx.grad = None
    loss = coop_loss(model, case["features"], case["target"])
    torch.testing.assert_close(loss.detach(), perturbed["loss"], rtol=1e-5, atol=0)
    loss.backward()
    close_rel(model.ctx.grad, perturbed["grad_ctx"], 2e-5)

    if generator is not None:  # stage 2 with a live generator: only the CoOp context gets a gradient
        model.ctx.grad = None
        features, target = mix_synthetic(generator, case["real_features"], case["real_target"], n_base)
        assert int(target[len(case["real_target"]):].min()) >= n_base
        fixed = dict(syn_labels=syn_case["gen_target"], z=syn_case["z"])
        loss = finetune_loss(model, generator, case["real_features"], case["real_target"], n_base, **fixed)
        mixed = mix_synthetic(generator, case["real_features"], case["real_target"], n_base, **fixed)
        assert torch.equal(loss, coop_loss(model, *mixed))  # the recipe's step: the same ops in the same order
        loss.backward()
        assert model.ctx.grad is not None and model.ctx.grad.abs().sum() > 0
        assert all(p.grad is None for p in generator.parameters())


def test_official_optimizer_dicts_of_both_variants():
    """The coop_step files state the fine-tune optimiser as the official script builds it: SGD for the 10 datasets,
    AdamW(lr 1e-3, eps 1e-4, wd 0.01) for ImageNet (README quirk 13). Both become the recipe's settings."""
    sgd = official_optimizer({"name": "SGD", "lr": 2e-3, "momentum": 0.0, "weight_decay": 0.0})
    adamw = official_optimizer({"name": "AdamW", "lr": 1e-3, "eps": 1e-4, "weight_decay": 0.01})
    for config, variant in ((sgd, "default"), (adamw, "imagenet")):
        assert config == TrainConfig(**SETTINGS[variant]["finetune"]), variant
    assert adamw.betas == (0.9, 0.999)  # torch's default, which the official script keeps
    step = build_optimizer([torch.zeros(3, requires_grad=True)], adamw)
    assert isinstance(step, torch.optim.AdamW) and step.defaults["eps"] == 1e-4


def protocol_splits():
    """One pytest param (path, split) per split of every protocol file (id `n<count>`, and the quirk case)."""
    params = []
    for param in golden_params("ship/ship_protocol.pt"):
        path = param.values[0]
        if path is None:
            params.append(pytest.param(None, None, id=param.id, marks=param.marks))
            continue
        case = load(path)
        params.extend(pytest.param(path, split, id=f"{path.stem}-n{split['n']}") for split in case["splits"])
        quirk = case["split_quirk_missing_train_label"]
        params.append(pytest.param(path, quirk, id=f"{path.stem}-n{quirk['n']}_missing_train_label"))
    return params


@pytest.mark.parametrize("path, split", protocol_splits())
def test_golden_split_rule(path, split):
    present = [label for label in range(split["n"]) if label not in split.get("missing_in_train", [])]
    random.Random(split["n"]).shuffle(present)  # the order of the train list does not matter
    base, new = split_base_new(present)
    assert (base, new) == (split["base_labels"], split["new_labels"])
    assert (len(base), len(new)) == (split["n_base"], split["n_new"])
    items = [Item(f"{label}.png", label, str(label)) for label in sorted(present)]
    assert [i.label for i in relabel(items, base)] == split["base_relabelled"]
    assert [i.label for i in relabel(items, new)] == split["new_relabelled"]


@pytest.mark.parametrize("path", golden_params("ship/ship_protocol.pt"))
def test_golden_protocol(path):
    case = load(path)
    for dataset in case["datasets"]:
        base, new = split_base_new(range(dataset["n_classes"]))
        assert (len(base), len(new)) == (dataset["n_base"], dataset["n_new"]), dataset["name"]
    for row in case["harmonic_mean"]:
        expected = 0.0 if row["H"] is None else row["H"]  # the official code divides by zero at 0 / 0
        assert harmonic_mean(row["base"], row["new"]) == pytest.approx(expected, rel=1e-12)
    ex = case["eval_example"]
    n_base = ex["n_base"]
    close(ship_logits(ex["test_features_base"], ex["text_features"][:n_base]), ex["logits_base"], 1e-4)
    close(ship_logits(ex["test_features_new"], ex["text_features"][n_base:]), ex["logits_new"], 1e-4)
    result = base_new_accuracy(ex["text_features"], n_base, ex["test_features_base"], ex["test_labels_base"],
                               ex["test_features_new"], ex["test_labels_new"])  # fmt: skip
    assert result == {"base": ex["base_acc"], "new": ex["new_acc"], "H": ex["H"]}


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return CLIP(16, 32, 1, 64, 16, 77, 49408, 32, 2, 2).eval()


@needs_vocab
def test_generator_contracts(tiny_clip):
    torch.manual_seed(1)
    names = ["cat", "dog", "red fox", "hot air balloon"]
    generator = SHIPGenerator(tiny_clip, names, SHIPConfig(variant="imagenet"))
    assert generator.encoder.net[0].out_features == 8 * 16 and generator.decoder.net[0].out_features == 8 * 16
    assert isinstance(generator.decoder.net[1], torch.nn.LeakyReLU) and generator.decoder.net[1].negative_slope == 0.2
    assert generator.decoder.net[2].out_features == 32 and generator.ctx.shape == (4, 32)
    assert float(generator.encoder.mean.bias.detach().abs().sum()) == 0  # the official init: zero biases
    x = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    with pytest.raises(ValueError, match="L2-normalised"):
        generator(x * 2, torch.tensor([0, 1, 0, 1, 1]))
    state = generator.prompt_state_dict()
    assert state["method"] == "ship" and set(state) == {"method", "config", "classnames", "encoder", "decoder", "ctx"}
    assert not any(k.startswith("clip") for k in state["encoder"])
    other = SHIPGenerator.from_prompt_state_dict(tiny_clip, names[:2], state, text_chunk=2)
    labels = torch.tensor([0, 1, 1, 0, 0])
    eps = torch.randn(5, 16)
    with torch.no_grad():
        k, depth = text_depth(tiny_clip)  # chunks of 2: the same sums reordered, then the loss's norm and mean
        assert_rounding_close(other(x, labels, eps=eps)["loss"], generator(x, labels, eps=eps)["loss"], k, depth + 2)
    with pytest.raises(ValueError, match="config differs"):
        SHIPGenerator(tiny_clip, names).load_prompt_state_dict(state)
    with pytest.raises(ValueError, match="not SHIP"):
        generator.load_prompt_state_dict({**state, "method": "coop"})
    for bad, match in ((dict(variant="vit"), "variant"), (dict(n_ctx=0), "n_ctx"), (dict(kl_weight=-1.0), "kl_weight")):
        with pytest.raises(ValueError, match=match):
            SHIPConfig(**bad)
    assert split_base_new([3, 3]) == ([3], [])  # the official rule: one class is base, new is empty
    with pytest.raises(ValueError, match="at least 1 class"):
        split_base_new([])


# ---- end to end: `tinyprompt train ship` on a tiny image set ----
CLASSES = ["airliner", "golden_retriever", "red fox", "tabby_cat"]  # sorted, so folder order = label order
OTHER = ["fire_truck", "tulip"]


def _images(root, names, counts, rng):
    image = pytest.importorskip("PIL.Image", reason="the image data path needs Pillow")
    split = {part: [] for part in counts}
    for label, name in enumerate(names):
        for part, count in counts.items():
            for i in range(count):
                rel = f"{part}/{name}/{i}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                image.frombytes("RGB", (40, 36), bytes(rng.randrange(256) for _ in range(40 * 36 * 3))).save(root / rel)
                split[part].append([rel, label, name])
    return split


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(model file, image root + split file of 4 classes, a folder dataset of 2 other classes)."""
    root = tmp_path_factory.mktemp("ship_data")
    model = root / "tiny_vit.pt"
    torch.save(load(GOLDEN / "clip" / "clip_tiny_vit.pt")["state_dict"], model)
    rng = random.Random(0)
    split = _images(root / "main", CLASSES, {"train": 5, "val": 2, "test": 3}, rng)
    (root / "split.json").write_text(json.dumps(split))
    _images(root / "other", OTHER, {"train": 1, "val": 2, "test": 3}, rng)
    return model, root


def ship_args(world, out, *extra):
    model, root = world
    return ["train", "ship", "--model", str(model), "--data", str(root / "main"), "--split", str(root / "split.json"),
            "--shots", "4", "--seed", "1", "--out", str(out), "--vae-epochs", "2", "--finetune-every", "1",
            "--epochs", "2", "--views", "2", "--batch-size", "4", "--vae-batch-size", "4", "--device", "cpu", *extra]  # fmt: skip


@needs_vocab
@pytest.mark.skipif(not (GOLDEN / "clip" / "clip_tiny_vit.pt").is_file(), reason=f"no tiny CLIP under {GOLDEN}/clip")
def test_train_ship_base_to_new_then_eval(world, tmp_path):
    model, root = world
    out = tmp_path / "run"
    assert main(ship_args(world, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "base-to-new" and metrics["variant"] == "default"
    assert metrics["classes"] == {"base": CLASSES[:2], "new": CLASSES[2:]}
    runs = metrics["selection"]["runs"]
    assert [r["generator_epoch"] for r in runs] == [1, 2] and metrics["selection"]["metric"] == "val_H"
    best = max(runs, key=lambda r: r["best"]["metrics"]["val_H"])  # the first of equals, as the recipe keeps it
    assert metrics["selection"]["chosen"] == best
    for name in ("selected", "final"):
        test = metrics["test"][name]
        assert test["H"] == pytest.approx(harmonic_mean(test["base"], test["new"]))
        for group in ("base", "new"):  # 6 test images per group
            assert test[group] * 6 / 100 == pytest.approx(round(test[group] * 6 / 100))
    assert {k: metrics[k] for k in ("base", "new", "H")} == metrics["test"]["selected"]
    generator_log = json.loads((out / "generator" / "metrics.json").read_text())
    assert [e["steps"] for e in generator_log["epochs"]] == [2, 2]  # 8 base images, batch 4
    assert all("rec_val" in e["eval"] and "recon" in e and "kl" in e for e in generator_log["epochs"])
    assert all((out / "generator" / f"generator_epoch{e}.pt").is_file() for e in (1, 2))
    finetune_log = json.loads((out / "finetune_epoch2" / "metrics.json").read_text())
    assert [e["steps"] for e in finetune_log["epochs"]] == [2, 2]
    # the official optimisation of the 10-dataset script: AdamW 1e-3 (wd 0.01) for the generator, then SGD 2e-3
    # without momentum or weight decay, cosine per iteration, for CoOp
    assert [e["lr"] for e in generator_log["epochs"]] == [1e-3, 1e-3]
    assert finetune_log["epochs"][0]["lr"] == 2e-3 and 0 < finetune_log["epochs"][1]["lr"] < 2e-3
    stage_configs = {name: torch.load(out / name / "checkpoint.pt", weights_only=True)["config"]
                     for name in ("generator", "finetune_epoch1")}  # fmt: skip
    assert {k: stage_configs["generator"][k] for k in ("optimizer", "lr", "weight_decay", "scheduler")} == \
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "scheduler": "constant"}  # fmt: skip
    fine = stage_configs["finetune_epoch1"]
    assert {k: fine[k] for k in ("optimizer", "lr", "momentum", "weight_decay", "scheduler")} == \
        {"optimizer": "sgd", "lr": 2e-3, "momentum": 0.0, "weight_decay": 0.0, "scheduler": "cosine_iter"}  # fmt: skip
    snapshot = torch.load(out / "generator" / "generator_epoch2.pt", weights_only=True)
    assert snapshot["method"] == "ship" and snapshot["config"]["variant"] == "default"
    prompt = torch.load(out / "prompt.pt", weights_only=True)
    chosen = torch.load(Path(best["out"]) / "best.pt", weights_only=True)
    assert prompt["method"] == "coop" and prompt["classnames"] == CLASSES and torch.equal(prompt["ctx"], chosen["ctx"])
    # `tinyprompt eval` of the saved prompt on the new classes alone reproduces the recipe's new accuracy
    new_only = tmp_path / "new_only"
    for name in CLASSES[2:]:
        (new_only / name).mkdir(parents=True)
        for image in sorted((root / "main" / "test" / name).iterdir()):
            (new_only / name / image.name).write_bytes(image.read_bytes())
    result = tmp_path / "eval.json"
    assert main(["eval", "--prompt", str(out / "prompt.pt"), "--model", str(model), "--data", str(new_only),
                 "--output", str(result), "--device", "cpu"]) == 0  # fmt: skip
    assert json.loads(result.read_text())["top1"] == pytest.approx(metrics["new"])


def test_train_ship_official_defaults():
    from tinyprompt.commands.cli import build_parser

    args = build_parser().parse_args(["train", "ship", "--model", "ViT-B/16", "--data", "d", "--out", "o"])
    assert (args.shots, args.seed, args.vae_batch_size, args.vae_lr, args.batch_size, args.finetune_every) == \
        (16, 1, 256, 1e-3, 256, 10)  # fmt: skip
    assert (args.vae_epochs, args.epochs, args.lr, args.variant) == (None, None, None, "auto")  # from the variant
    assert {k: SETTINGS["default"][k] for k in ("vae_epochs", "epochs")} == {"vae_epochs": 50, "epochs": 200}
    assert SETTINGS["default"]["finetune"] == {"optimizer": "sgd", "lr": 2e-3, "momentum": 0.0, "weight_decay": 0.0}
    assert {k: SETTINGS["imagenet"][k] for k in ("vae_epochs", "epochs")} == {"vae_epochs": 10, "epochs": 20}
    assert SETTINGS["imagenet"]["finetune"] == {"optimizer": "adamw", "lr": 1e-3, "eps": 1e-4, "weight_decay": 0.01}


@needs_vocab
@pytest.mark.skipif(not (GOLDEN / "clip" / "clip_tiny_vit.pt").is_file(), reason=f"no tiny CLIP under {GOLDEN}/clip")
def test_train_ship_cross_dataset_imagenet_variant(world, tmp_path):
    model, root = world
    out = tmp_path / "cross"
    assert main(ship_args(world, out, "--eval-data", str(root / "other"), "--select", "base", "--vae-epochs", "1",
                          "--variant", "imagenet")) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "cross-dataset" and metrics["variant"] == "imagenet"
    snapshot = torch.load(out / "generator" / "generator_epoch1.pt", weights_only=True)
    assert snapshot["config"]["variant"] == "imagenet"
    for part in ("encoder", "decoder"):  # hidden 8 D (D = 32): the ImageNet script's wider encoder
        assert snapshot[part]["net.0.weight"].shape == (8 * 32, 32)
    fine = torch.load(out / "finetune_epoch1" / "checkpoint.pt", weights_only=True)["config"]
    assert {k: fine[k] for k in ("optimizer", "lr", "eps", "weight_decay", "scheduler")} == \
        {"optimizer": "adamw", "lr": 1e-3, "eps": 1e-4, "weight_decay": 0.01, "scheduler": "cosine_iter"}  # fmt: skip
    assert metrics["classes"] == {"base": CLASSES, "new": OTHER}
    assert metrics["selection"]["metric"] == "val_base" and len(metrics["selection"]["runs"]) == 1
    assert metrics["test"]["selected"]["new"] * 6 / 100 == pytest.approx(round(metrics["test"]["selected"]["new"] * 6 / 100))
    with pytest.raises(ValueError, match="--eval-split needs --eval-data"):
        main(ship_args(world, tmp_path / "bad", "--eval-split", str(root / "split.json")))


@needs_vocab
def test_train_ship_one_class_names_the_count(world, tmp_path):
    """One class in the train list: base [it], new empty (the official rule); the recipe has no new classes to
    synthesise or evaluate, and says so, naming the count, before any work."""
    model, root = world
    split = json.loads((root / "split.json").read_text())
    split = {part: [row for row in rows if row[1] == 0] for part, rows in split.items()}
    (tmp_path / "one.json").write_text(json.dumps(split))
    args = ship_args(world, tmp_path / "out")
    args[args.index("--split") + 1] = str(tmp_path / "one.json")
    with pytest.raises(ValueError, match="at least 2 classes in the train split, got 1"):
        main(args)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
