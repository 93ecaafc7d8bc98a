"""ILM-VP (tinyprompt.methods.ilmvp, .label_mapping): golden parity with the official code on every
ilmvp/*.pt file and case (frequency matrices, greedy mappings, both prompts, the CLIP text-prompt
variant, CNN training trajectories through the engine), the fast greedy against a plain loop, frozen
backbones, missing target classes, the mapping modes and the saved state."""
import json
import sys
import types
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from golden import GOLDEN, golden_params, load
from tolerance import U, adam_reach, assert_rounding_close, assert_within, rounding_bound, tower_depth
from tinyprompt.engine import TrainConfig, lr_at, train
from tinyprompt.methods.ilmvp import (
    ILM_TEMPLATES, ILMVP, AdditivePrompt, CLIPClassifier, FrozenClassifier, ILMVPConfig, PaddingPrompt,
    clip_text_source, load_classifier,
)
from tinyprompt.methods import label_mapping
from tinyprompt.methods.label_mapping import (frequency_matrix, greedy_label_mapping, official_greedy_mapping,
                                              random_label_mapping)  # fmt: skip

# every golden file name -> the test that checks it
CHECKED = {"freq_matrix", "greedy_mapping", "expansive_prompt", "additive_prompt", "clip_text_prompt", "train_trajectory"}
needs_tiny_vit = pytest.mark.skipif(not (GOLDEN / "clip" / "clip_tiny_vit.pt").is_file(),
                                    reason=f"no tiny CLIP under {GOLDEN}/clip")  # fmt: skip


def golden_cases(pattern: str, key: str = "cases"):
    """One pytest param per case (id `<file>-<case name>`) of every golden file matching `pattern`; when
    the golden root or the files are absent, golden_params' skipped param (with its reason) instead."""
    params = []
    for param in golden_params(pattern):
        path = param.values[0]
        if path is None:
            params.append(param)
        else:
            params.extend(pytest.param(case, id=f"{path.stem}-{case['name']}") for case in load(path)[key])
    return params


@pytest.mark.parametrize("path", golden_params("ilmvp/*.pt"))
def test_every_golden_file_is_checked(path):
    assert path.stem in CHECKED, f"{path} has no test: add one for it"
    assert load(path)["meta"]["official_commit"].startswith("84ca0424")


# ------------------------------------------------------------------------------------- label mapping
def _identity_model(n_source, n_target):
    """ILMVP whose prompt and source are identities: it maps given logits (N, S) -> (N, T)."""
    return ILMVP(FrozenClassifier(nn.Identity(), n_cls=n_source), nn.Identity(), n_target)


@pytest.mark.parametrize("case", golden_cases("ilmvp/freq_matrix*.pt"))
def test_golden_frequency_matrix_and_mapping_pass(case):
    logits, labels, S, T = case["logits"], case["labels"], case["S"], case["T"]
    assert torch.equal(logits.argmax(dim=1), case["pred"])
    assert torch.equal(frequency_matrix(case["pred"], labels, S, T), case["freq"])
    assert torch.equal(frequency_matrix(logits, labels, S, T), case["freq"])
    # the full pass, batch by batch as the official loader, then the gather
    model = _identity_model(S, T)
    batches = list(zip(logits.split(case["batch_size"]), labels.split(case["batch_size"])))
    freq, mapping = model.frequency_mapping(batches)
    assert torch.equal(freq, case["freq"]) and torch.equal(mapping, case["mapping"])
    assert model.update_mapping(batches, epoch=0)
    assert torch.equal(model(logits), case["mapped_logits"])


@pytest.mark.parametrize("case", golden_cases("ilmvp/freq_matrix*.pt", key="quirk_cases"))
def test_golden_missing_target_class_keeps_its_column_and_warns(case):
    T, missing = case["intended_T"], case["missing_class"]
    with pytest.warns(UserWarning, match=rf"target class\(es\) \[{missing}\] have no samples"):
        freq = frequency_matrix(case["pred"], case["labels"], case["S"], T)
    assert torch.equal(freq, case["freq_with_explicit_T"])
    assert torch.equal(case["official_freq"], freq[:, : T - 1])  # the official bug drops the last column
    names = [f"class{t}" for t in range(T)]
    model = ILMVP(FrozenClassifier(nn.Identity(), n_cls=case["S"]), nn.Identity(), T, class_names=names)
    with pytest.warns(UserWarning, match=rf"\['{names[missing]}'\]"):
        freq, mapping = model.frequency_mapping([(case["logits"], case["labels"])])
    assert torch.equal(freq, case["freq_with_explicit_T"])
    assert torch.equal(mapping, greedy_label_mapping(case["freq_with_explicit_T"]))  # its own column, not shifted


@pytest.mark.parametrize("case", golden_cases("ilmvp/greedy_mapping*.pt"))
def test_golden_greedy_mapping(case):
    dist = case["dist"]
    before = dist.clone()
    mapping = greedy_label_mapping(dist)
    assert torch.equal(mapping, case["mapping"])
    assert torch.equal(dist, before), "the input matrix must not be modified"
    assert torch.equal(mapping[case["pick_order"][:, 1]], case["pick_order"][:, 0])
    assert int(dist[mapping, torch.arange(dist.shape[1])].sum()) == case["total_count"]
    assert torch.equal(official_greedy_mapping(dist), case["mapping"])  # the plain loop the benchmark times agrees too
    # a non-contiguous input (the official code then assigns a single pair, quirk Q3) gives the same
    assert torch.equal(greedy_label_mapping(dist.t().contiguous().t()), case["mapping"])


@pytest.mark.parametrize("seed", range(6))
def test_greedy_matches_plain_loop_on_random_matrices(seed, monkeypatch):
    g = torch.Generator().manual_seed(seed)
    S, T = [(40, 8), (60, 30), (25, 25), (200, 12), (30, 1), (90, 40)][seed]
    for high, density in [(3, 1.0), (50, 0.1), (1000, 0.5), (2, 0.02)]:  # heavy ties, sparse, dense (pruned)
        freq = torch.randint(0, high, (S, T), generator=g) * (torch.rand(S, T, generator=g) < density)
        want = official_greedy_mapping(freq)
        for block in (1, 7, 8192):  # the candidates in blocks of any size
            monkeypatch.setattr(label_mapping, "_BLOCK", block)
            assert torch.equal(greedy_label_mapping(freq), want), (S, T, high, density, block)


def test_greedy_and_frequency_errors():
    with pytest.raises(ValueError, match="T <= S"):
        greedy_label_mapping(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer counts"):
        greedy_label_mapping(torch.rand(4, 2))
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 2\)"):
        frequency_matrix(torch.tensor([0, 1]), torch.tensor([0, 2]), 3, 2)
    with pytest.raises(ValueError, match=r"source predictions must lie in \[0, 3\)"):
        frequency_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3, 2)


def test_random_mapping_is_seeded_and_one_to_one():
    a, b, c = random_label_mapping(50, 10, seed=3), random_label_mapping(50, 10, seed=3), random_label_mapping(50, 10, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.unique().numel() == 10 and int(a.max()) < 50
    model = ILMVP(FrozenClassifier(nn.Identity(), n_cls=50), nn.Identity(), 10, ILMVPConfig("rlm", seed=3))
    assert torch.equal(model.mapping, a)
    assert not model.update_mapping([(torch.randn(4, 50), torch.arange(4))], epoch=0)  # rlm never recomputes


def test_mapping_modes_recompute_when_due():
    logits, labels = torch.eye(6)[[3, 1, 5, 0, 2, 4]] * 5, torch.arange(6)  # sample t predicts a fixed source
    batches = [(logits, labels)]
    for mode, interval, due in [("ilm", 1, [0, 1, 2, 3]), ("ilm", 2, [0, 2]), ("flm", 1, [0])]:
        model = _identity_model(6, 6)
        model.config = ILMVPConfig(mode, interval)
        assert [e for e in range(4) if model.update_mapping(batches, e)] == due
        assert model.mapping.tolist() == [3, 1, 5, 0, 2, 4]


# ------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("case", golden_cases("ilmvp/expansive_prompt*.pt"))
def test_golden_padding_prompt(case):
    n = case["in_size"]
    prompt = PaddingPrompt(n, case["out_size"], case["mean"], case["std"], case["center_mask"])
    assert (prompt.l_pad, prompt.r_pad) == (case["l_pad"], case["r_pad"])
    assert torch.equal(prompt.mask.bool(), case["mask"]) and int(prompt.mask.sum()) == case["mask_ones"]
    with torch.no_grad():
        prompt.prompt.copy_(case["program"])
    out = prompt(case["x"])
    assert out.shape == (case["batch"], 3, case["out_size"], case["out_size"])
    torch.testing.assert_close(out, case["out"], rtol=0, atol=1e-5)
    (out * case["upstream_weight"]).sum().backward()
    grad, want = prompt.prompt.grad, case["grad_program"]
    torch.testing.assert_close(grad, want, rtol=0, atol=max(1e-5 * float(want.abs().max()), 1e-7))
    assert bool((grad[~case["mask"]] == 0).all()), "the image window must get exactly zero gradient"


@pytest.mark.parametrize("case", golden_cases("ilmvp/additive_prompt*.pt"))
def test_golden_additive_prompt(case):
    prompt = AdditivePrompt(case["size"], case["pad"])
    assert torch.equal(prompt.mask.bool(), case["mask"]) and int(prompt.mask.sum()) == case["mask_ones"]
    with torch.no_grad():
        prompt.prompt.copy_(case["program"])
    x = case["x"].clone()
    out = prompt(x)
    assert torch.equal(x, case["x"]) and out.data_ptr() != x.data_ptr(), "the input must stay untouched (Q6)"
    torch.testing.assert_close(out, case["out"], rtol=0, atol=1e-6)
    (out * case["grad_out"]).sum().backward()
    torch.testing.assert_close(prompt.prompt.grad, case["grad_program"], rtol=0, atol=1e-6)


def test_prompt_errors():
    with pytest.raises(ValueError, match="2 \\* pad <= image_size"):
        AdditivePrompt(10, 6)
    with pytest.raises(ValueError, match="built for 32x32"):
        PaddingPrompt(32)(torch.zeros(1, 3, 30, 30))
    with pytest.raises(ValueError, match="image_size <= output_size"):
        PaddingPrompt(300)


# ------------------------------------------------------------------------------- CLIP text prompts
def _tiny_clip():
    from tinyprompt.clip_checkpoint import build_model

    return build_model(load(GOLDEN / "clip" / "clip_tiny_vit.pt")["state_dict"], "openai")  # OpenAI's CLIP code


@pytest.mark.parametrize("path", golden_params("ilmvp/clip_text_prompt*.pt"))
def test_golden_clip_text_table(path):
    from tinyprompt.tokenizer import tokenize

    data = load(path)
    assert list(ILM_TEMPLATES) == data["templates"]
    source = clip_text_source(_tiny_clip(), data["class_names"])
    assert source.texts == data["texts"] and source.n_cls == 81 * len(data["class_names"])
    assert torch.equal(tokenize(source.texts), data["tokens"].long())
    torch.testing.assert_close(source.text_features, data["text_emb"], rtol=0, atol=1e-5)
    assert float(source.clip.logit_scale.exp()) == data["logit_scale"]
    assert not data["official_closure_backward_ok"] and "inplace" in data["official_closure_backward_error"]


# "" = the stored random prompt; "zero_prompt_" = the official initial state (the epoch-0 mapping)
@pytest.mark.parametrize("prefix", ["", "zero_prompt_"], ids=["prompted", "zero_prompt"])
@pytest.mark.parametrize("path", golden_params("ilmvp/clip_text_prompt*.pt"))
def test_golden_clip_text_prompt_selection(path, prefix):
    data = load(path)
    source = clip_text_source(_tiny_clip(), data["class_names"])
    C, bs = len(data["class_names"]), data["loader_batch_size"]
    model = ILMVP(source, AdditivePrompt(data["image_resolution"], data["pad"]), C)
    with torch.no_grad():
        model.prompt.prompt.copy_(data[prefix + "program"])
        features = source.clip.encode_image(model.prompt(data["x_train"]))
        torch.testing.assert_close(F.normalize(features, dim=-1), data[prefix + "train_image_features"], rtol=0, atol=1e-5)
        torch.testing.assert_close(model.source_logits(data["x_train"]), data[prefix + "train_logits"], rtol=0, atol=1e-4)
        torch.testing.assert_close(model.source_logits(data["x_test"]), data[prefix + "test_logits"], rtol=0, atol=1e-4)
    batches = list(zip(data["x_train"].split(bs), data["y_train"].split(bs)))
    freq, mapping = model.frequency_mapping(batches)
    assert torch.equal(freq, data[prefix + "freq"]) and torch.equal(mapping, data[prefix + "mapping"])
    assert model.update_mapping(batches, epoch=0) and torch.equal(model.mapping, data[prefix + "mapping"])
    logits = model(data["x_train"])  # with gradients: the out-of-place normalisation works on CPU (Q8)
    torch.testing.assert_close(logits, data[prefix + "train_mapped_logits"], rtol=0, atol=1e-4)
    loss = model.loss(logits, data["y_train"])
    assert abs(loss.item() - data[prefix + "train_loss"]) <= 1e-5 * data[prefix + "train_loss"]
    loss.backward()
    grad = model.prompt.prompt.grad
    assert grad.abs().sum() > 0 and bool((grad[~model.prompt.mask.bool()] == 0).all())  # only the frame learns
    assert all(p.grad is None for p in source.parameters()), "no gradient may reach CLIP"
    torch.testing.assert_close(model(data["x_test"]), data[prefix + "test_mapped_logits"], rtol=0, atol=1e-4)


@needs_tiny_vit
def test_clip_zero_shot_source_over_a_source_label_set():
    """CLIP as a plain frozen source: the zero-shot classifier of a source label set (not the target names)."""
    from tinyprompt.zeroshot import zeroshot_classifier, zeroshot_logits

    clip = _tiny_clip()
    source_names = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray"]
    weights = zeroshot_classifier(clip, source_names, list(ILM_TEMPLATES[:3]))  # (6, E) template ensemble
    source = CLIPClassifier(clip, weights, source_names)
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        k, depth = tower_depth(clip.visual.transformer, 3 * 2 * 2)  # the same features, batched differently
        assert_rounding_close(source(images), zeroshot_logits(clip, images, weights), k, depth + 2)  # + norm, logits
    model = ILMVP(source, AdditivePrompt(32, 4), 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    freq, mapping = model.frequency_mapping([(images, labels)])
    with torch.no_grad():
        top1 = source(images).argmax(1)
    assert torch.equal(freq, frequency_matrix(top1, labels, 6, 3)) and torch.equal(mapping, greedy_label_mapping(freq))
    model.update_mapping([(images, labels)], epoch=0)
    F.cross_entropy(model(images), labels).backward()
    assert model.prompt.prompt.grad.abs().sum() > 0 and all(p.grad is None for p in clip.parameters())


# ------------------------------------------------------------------------------ training trajectory
class SourceNet(nn.Module):
    """The golden frozen classifier: conv8/8 -> BN (eval) -> ReLU -> conv3 -> ReLU -> avgpool 7 -> fc."""

    def __init__(self, c1, c2, num_classes, **_):  # the golden source_net_config's key names
        super().__init__()
        self.conv1 = nn.Conv2d(3, c1, 8, stride=8, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 49, num_classes)

    def forward(self, x):  # (B, 3, 224, 224) -> (B, S)
        x = F.relu(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 7), 1))


def _trajectory_model(case):
    net = SourceNet(**case["source_net_config"])
    net.load_state_dict(case["source_net_state_dict"])
    net.train()  # the wrapper must put it (and keep it) in eval mode
    source = FrozenClassifier(net, 224, case["mean"], case["std"])
    model = ILMVP(source, PaddingPrompt(case["img_size"], 224, case["mean"], case["std"]), case["T"])
    with torch.no_grad():
        model.prompt.prompt.copy_(case["program_init"])
    return net, model


@pytest.mark.parametrize("case", golden_cases("ilmvp/train_trajectory*.pt"))
def test_golden_training_trajectory_through_the_engine(case):
    net, model = _trajectory_model(case)
    x, y, name = case["x_train"], case["y_train"], case["name"]
    config = TrainConfig(max_epoch=len(case["epoch_batches"]), optimizer="adam", lr=case["lr"],
                         betas=tuple(case["betas"]), eps=case["eps"], weight_decay=case["weight_decay"],
                         scheduler="multistep", warmup_epochs=0, milestones=tuple(case["milestones"]),
                         gamma=case["gamma"], precision="fp32", log_every=1000)
    assert config.milestones == (int(0.5 * case["epochs_total"]), int(0.72 * case["epochs_total"]))
    mbs = case["mapping_batch_size"]
    mapping_batches = list(zip(x.split(mbs), y.split(mbs)))
    seen = {"mapping_epochs": [], "programs": [], "grads": [], "losses": [], "logits": []}

    def epoch_start(model, epoch):
        if model.update_mapping(mapping_batches, epoch):
            k = len(seen["mapping_epochs"])
            seen["mapping_epochs"].append(epoch)
            assert torch.equal(model.mapping, case["mappings"][k]), (name, epoch)
            with torch.no_grad():
                logits = model.source_logits(x)
            torch.testing.assert_close(logits, case["mapping_source_logits"][k], rtol=0, atol=1e-5)
            assert torch.equal(frequency_matrix(logits, y, case["S"], case["T"]), case["freqs"][k])

    def loss_fn(model, batch, info):
        if info.global_step:  # the previous step's gradient and update are still in place here
            seen["grads"].append(model.prompt.prompt.grad.clone())
            seen["programs"].append(model.prompt.prompt.detach().clone())
        logits = model(batch[0])
        seen["logits"].append(logits.detach())
        loss = model.loss(logits, batch[1])
        seen["losses"].append(loss.item())
        assert lr_at(config, info.epoch, info.step) == pytest.approx(case["step_lr"][info.global_step])
        assert info.epoch == case["step_epoch"][info.global_step]
        return loss

    batches = lambda epoch: [(x[idx], y[idx]) for idx in case["epoch_batches"][epoch]]  # noqa: E731
    train(model, loss_fn, batches, config, epoch_start_fn=epoch_start)
    seen["grads"].append(model.prompt.prompt.grad.clone())
    seen["programs"].append(model.prompt.prompt.detach().clone())

    assert seen["mapping_epochs"] == case["mapping_epochs"], name
    torch.testing.assert_close(torch.tensor(seen["losses"], dtype=torch.float64), case["losses"], rtol=1e-5, atol=0)
    for got, want in zip(seen["logits"], case["step_mapped_logits"], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    if case["grads"] is not None:
        for got, want in zip(seen["grads"], case["grads"], strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=max(1e-7, 1e-5 * float(want.abs().max())))
    # Adam rescales every gradient to a step of about lr, so rounding moves the program by amounts that grow with
    # the learning rates of the steps so far (tests/tolerance.py adam_reach): an entry whose gradient is within
    # rounding of zero may step either way (2 x the reach); the rest carry the gradient's relative rounding ρ
    # (the source net's backward: fc over c2·49 inputs, conv2, conv1, the normalisation) plus one ulp a step.
    reach = torch.tensor(adam_reach(case["step_lr"], tuple(case["betas"])), dtype=torch.float32)
    rho = rounding_bound(torch.ones(()), k=case["source_net_config"]["c2"] * 49, depth=4)
    programs = torch.stack(seen["programs"])
    diff = (programs - case["programs"]).abs().flatten(1)  # (steps, entries)
    steps = torch.arange(1, len(reach) + 1)
    ulps = steps * 2 * U * case["programs"].abs().flatten(1).amax(1)
    assert_within(diff, torch.zeros_like(diff), (2 * reach)[:, None], f"{name}: programs beyond Adam's reach")
    bulk = (diff <= (2 * rho * reach + ulps)[:, None]).float().mean(1)
    assert bool((bulk > 0.999).all()), f"{name}: share of program entries within rounding, per step: {bulk.tolist()}"
    # frozen backbone: bit-identical weights and BN statistics, eval mode, no gradients; centre fixed
    for key, value in case["source_net_state_dict"].items():
        assert torch.equal(net.state_dict()[key], value), key
    assert not net.training and all(p.grad is None for p in net.parameters())
    window = ~model.prompt.mask.bool()
    assert bool((model.prompt.prompt.grad[window] == 0).all())
    assert torch.equal(model.prompt.prompt.detach()[window], case["program_init"][window])


# ---------------------------------------------------------------------------------- saved state
def test_prompt_state_dict_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.Flatten(), nn.LazyLinear(12))
    net(torch.zeros(1, 3, 16, 16))
    make = lambda: ILMVP(FrozenClassifier(net, 16), PaddingPrompt(8, 16), 3)  # noqa: E731
    model = make()
    assert model.source.n_cls == 12 and [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt.prompt"]
    with torch.no_grad():
        model.prompt.prompt.normal_()
    model.mapping.copy_(torch.tensor([7, 2, 9]))
    state = model.prompt_state_dict()
    assert set(state) == {"method", "prompt", "mapping", "config", "classnames"} and state["config"]["mapping"] == "ilm"
    other = make()
    other.load_prompt_state_dict(state)
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(other(images), model(images))
    with pytest.raises(ValueError, match="saved mapping"):
        other.load_prompt_state_dict({**state, "mapping": torch.tensor([0, 1, 12])})
    with pytest.raises(ValueError, match="T <= S"):
        ILMVP(FrozenClassifier(net, 16), PaddingPrompt(8, 16), 13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train()
    assert model.training and not model.source.training and not net.training


def test_any_callable_is_a_frozen_source():
    weight = torch.randn(12, 3 * 8 * 8, generator=torch.Generator().manual_seed(0))
    source = FrozenClassifier(lambda x: x.flatten(1) @ weight.t(), input_size=8)  # a plain function, not a module
    assert source.n_cls == 12  # read from one probe forward
    model = ILMVP(source, PaddingPrompt(5, 8), 3)
    images = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    model.update_mapping([(images, torch.tensor([0, 1, 2, 0]))], epoch=0)
    logits = model(images)
    assert torch.equal(logits, (model.prompt(images).flatten(1) @ weight.t())[:, model.mapping])
    logits.sum().backward()
    grad, window = model.prompt.prompt.grad, ~model.prompt.mask.bool()
    assert grad[~window].abs().min() > 0 and bool((grad[window] == 0).all())  # every frame pixel, no centre pixel
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt.prompt"]


def test_flm_mapping_is_restored_by_a_resume(tmp_path):
    """An interrupted FLM run resumes with the epoch-0 mapping from the checkpoint (not the placeholder, not a
    recomputed one) and ends bit-identical to the uninterrupted run."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 20))
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(12, 3, 10, 10, generator=g), torch.arange(12) % 4
    batches = lambda epoch: list(zip(images.split(4), labels.split(4)))  # noqa: E731
    loss_fn = lambda model, batch, info: model.loss(model(batch[0]), batch[1])  # noqa: E731
    config = TrainConfig(max_epoch=3, optimizer="adam", lr=0.01, scheduler="constant", warmup_epochs=0,
                         precision="fp32", log_every=1000)  # fmt: skip

    def run(out, crash_at=None):
        model = ILMVP(FrozenClassifier(net, 16), PaddingPrompt(10, 16), 4, ILMVPConfig("flm"))
        recomputed = []

        def epoch_start(model, epoch):
            if epoch == crash_at:
                raise KeyboardInterrupt  # killed after the checkpoint of epoch crash_at - 1
            if model.update_mapping(batches(epoch), epoch):
                recomputed.append(epoch)

        train(model, loss_fn, batches, config, out_dir=out, resume=True, epoch_start_fn=epoch_start)
        return model, recomputed

    whole, recomputed = run(tmp_path / "whole")
    assert recomputed == [0] and not torch.equal(whole.mapping, torch.arange(4))  # a real (non-placeholder) mapping
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", crash_at=1)
    resumed, recomputed = run(tmp_path / "resumed")
    assert recomputed == [] and torch.equal(resumed.mapping, whole.mapping)
    assert torch.equal(resumed.prompt.prompt, whole.prompt.prompt)
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["prompt"]
    assert torch.equal(saved["mapping"], whole.mapping) and torch.equal(saved["prompt"], whole.prompt.prompt.detach())


def test_torchvision_source_is_optional_and_lazy(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # not installed
    with pytest.raises(ImportError, match="pip install torchvision"):
        load_classifier("torchvision:resnet18")
    built = {}

    def get_model(name, weights):
        built.update(name=name, weights=weights)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))

    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=types.SimpleNamespace(get_model=get_model)))
    source = load_classifier("torchvision:tiny", input_size=8)
    assert built == {"name": "tiny", "weights": "DEFAULT"} and source.n_cls == 5
    assert not any(p.requires_grad for p in source.parameters())


# ----------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def image_world(tmp_path_factory):
    """A train/ and test/ folder per class (3 classes x 4 + 2 random PNGs) and a TorchScript classifier (S=12)."""
    PIL = pytest.importorskip("PIL.Image", reason="the image data path needs Pillow")
    root = tmp_path_factory.mktemp("ilmvp_data")
    g = torch.Generator().manual_seed(0)
    for part, count in (("train", 4), ("test", 2)):
        for label, name in enumerate(["ant", "bee", "cat"]):
            (root / part / name).mkdir(parents=True)
            for i in range(count):
                pixels = (torch.rand(20, 20, 3, generator=g) * 80 + 80 * label).to(torch.uint8)
                PIL.fromarray(pixels.numpy()).save(root / part / name / f"{i}.png")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 12))
    scripted = root / "classifier.pt"
    with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript, which users still have
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), scripted)
    return root, scripted


def _train(*argv):
    from tinyprompt.commands.cli import main

    return main(["train", "ilmvp", *map(str, argv), "--device", "cpu", "--batch-size", "4", "--epochs", "2"])


def test_cli_cnn_source_trains_saves_prompt_and_mapping(image_world, tmp_path):
    root, scripted = image_world
    out = tmp_path / "run"
    assert _train("--source", scripted, "--data", root, "--image-size", "16", "--input-size", "32", "--out", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["lr"] for e in metrics["epochs"]] == pytest.approx([0.01, 0.0001])  # milestones int(0.5 E), int(0.72 E)
    assert [e["steps"] for e in metrics["epochs"]] == [3, 3]
    prompt = torch.load(out / "prompt.pt", weights_only=True)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert prompt["prompt"].shape == (3, 32, 32) and prompt["classnames"] == ["ant", "bee", "cat"]
    assert torch.equal(prompt["mapping"], checkpoint["prompt"]["mapping"])
    assert metrics["test"]["mapping"] == prompt["mapping"].tolist() and len(set(metrics["test"]["mapping"])) == 3
    assert metrics["test"]["top1"] * 6 / 100 == pytest.approx(round(metrics["test"]["top1"] * 6 / 100))  # whole images
    assert bool((prompt["prompt"][:, 8:24, 8:24] == 0).all()) and prompt["prompt"].abs().sum() > 0  # only the frame moves
    config = checkpoint["config"]
    official = ("adam", 0.01, "multistep", 0.0)
    assert (config["optimizer"], config["lr"], config["scheduler"], config["weight_decay"]) == official
    # the reported top-1 is the saved prompt + mapping's accuracy on the test images
    from PIL import Image

    from tinyprompt.data.splits import folder_items
    from tinyprompt.commands.recipes.ilmvp import ResizeToTensor

    model = ILMVP(load_classifier(str(scripted), 32), PaddingPrompt(16, 32), 3)
    model.load_prompt_state_dict(prompt)
    items = folder_items(root / "test")
    images = torch.stack([ResizeToTensor(16)(Image.open(item.path)) for item in items])
    with torch.no_grad():
        predictions = model(images).argmax(1)
    top1 = 100 * (predictions == torch.tensor([item.label for item in items])).float().mean().item()
    assert metrics["test"]["top1"] == pytest.approx(top1)
    # a finished run resumes to the same result
    assert _train("--source", scripted, "--data", root, "--image-size", "16", "--input-size", "32", "--out", out, "--resume") == 0
    assert torch.equal(torch.load(out / "prompt.pt", weights_only=True)["prompt"], prompt["prompt"])
    # rlm: the seeded random mapping, never recomputed
    assert _train("--source", scripted, "--data", root, "--image-size", "16", "--input-size", "32", "--out", tmp_path / "rlm",
                  "--mapping", "rlm", "--seed", "3") == 0
    saved = torch.load(tmp_path / "rlm" / "prompt.pt", weights_only=True)["mapping"]
    assert torch.equal(saved, random_label_mapping(12, 3, seed=3))


@pytest.mark.skipif(not (GOLDEN / "clip" / "clip_tiny_vit.pt").is_file(), reason=f"no tiny CLIP under {GOLDEN}/clip")
def test_cli_clip_source_selects_one_text_per_class(image_world, tmp_path):
    root, _ = image_world
    clip_file = tmp_path / "tiny_vit.pt"
    torch.save(load(GOLDEN / "clip" / "clip_tiny_vit.pt")["state_dict"], clip_file)
    out = tmp_path / "clip_run"
    assert _train("--source", f"clip:{clip_file}", "--data", root, "--pad", "4", "--mapping", "flm", "--out", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    lrs = [e["lr"] for e in metrics["epochs"]]
    assert lrs[0] == 40.0 and 0 < lrs[1] < 40.0  # cosine per iteration
    config = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    official = ("sgd", 40.0, 0.9, "cosine_iter")
    assert (config["optimizer"], config["lr"], config["momentum"], config["scheduler"]) == official
    mapping, texts = metrics["test"]["mapping"], metrics["test"]["mapping_texts"]
    assert len(mapping) == 3 and all(0 <= s < 81 * 3 for s in mapping)
    assert texts == [ILM_TEMPLATES[s // 3].format(["ant", "bee", "cat"][s % 3]) for s in mapping]
    assert torch.load(out / "prompt.pt", weights_only=True)["prompt"].shape == (3, 32, 32)


def test_cli_official_defaults():
    from tinyprompt.commands.cli import build_parser

    args = build_parser().parse_args(["train", "ilmvp", "--source", "clip:ViT-B/32", "--data", "d", "--out", "o"])
    official = (200, 128, "ilm", 1, None, 30)  # lr None: per source kind (CNN Adam 0.01, CLIP SGD 40)
    assert (args.epochs, args.batch_size, args.mapping, args.mapping_interval, args.lr, args.pad) == official


def test_cli_bad_values(image_world, tmp_path):
    root, _ = image_world
    with pytest.raises(SystemExit):
        _train("--source", "x", "--data", root, "--out", tmp_path, "--mapping", "best")
    with pytest.raises(ValueError, match="neither 'torchvision:NAME' nor an existing TorchScript file"):
        _train("--source", tmp_path / "missing.pt", "--data", root, "--out", tmp_path)
    not_script = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, not_script)
    with pytest.raises(ValueError, match="is not a TorchScript archive"):
        _train("--source", not_script, "--data", root, "--out", tmp_path)
