"""tinyprompt.methods.official_formats and `tinyprompt import-prompt` / `export-prompt`: the official repositories'
prompt files, in and out (and tinyprompt's own prompt as .safetensors).

- round trips: import(export(prompt)) is the prompt, bit for bit, for every supported method;
- official files built here with the layout the official code saves (Dassl's save_checkpoint dict, the
  PromptLearner's keys, float16 as under the default PREC) import and give the text features of the prompt
  they came from;
- exported files load through the official loaders' steps (key names and shapes, strict where they are);
- wrong shapes, unknown layouts and pickled objects each fail with one line that names the problem;
- the commands do the same for every format, ILM-VP's (its mask from the training flags) included, and convert any
  prompt to .safetensors and back.
The expected features are computed the same way from the same fp32 values, so they are compared bit for bit.
"""
import warnings
from types import SimpleNamespace

import pytest
import torch
from golden import GOLDEN, needs_vocab
from test_methods_registry import assert_same_state, trained
from torch import nn

import tinyprompt
from tinyprompt.clip import CLIP
from tinyprompt.commands.cli import main
from tinyprompt.methods import (ILMVP, POMP, CoOp, CoOpConfig, ILMVPConfig, POMPConfig, TaIDPT, TaIDPTConfig,
                                export_prompt, import_prompt, load_prompt, read_prompt, read_prompt_file)
from tinyprompt.methods.ilmvp import AdditivePrompt, PaddingPrompt

NAMES, OTHER = ["cat", "golden_retriever", "a (b)"], ["tabby cat", "boeing 747"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return CLIP(16, 32, 1, 64, 16, 77, 49408, 32, 2, 2).eval()  # text width 32, embed 16


def one_line_error(call, *fragments):
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def features(model) -> torch.Tensor:
    with torch.no_grad():
        return model.text_features() if hasattr(model, "text_features") else torch.cat(model.class_embeddings())


# ----------------------------------------------------------------------------- round trips
@needs_vocab
@pytest.mark.parametrize("build, lacks", [
    (lambda clip: CoOp(clip, NAMES, CoOpConfig(n_ctx=4)), {}),
    (lambda clip: CoOp(clip, NAMES, CoOpConfig(n_ctx=3, csc=True, class_token_position="middle")),
     {"class_token_position": "middle"}),
    (lambda clip: CoOp(clip, NAMES, CoOpConfig(ctx_init="a photo of a", class_token_position="front")),
     {"class_token_position": "front", "ctx_init": "a photo of a"}),
    (lambda clip: POMP(clip, NAMES, POMPConfig(n_ctx=4)), {}),
    (lambda clip: TaIDPT(clip, NAMES, TaIDPTConfig(n_ctx=4, temperature_image=4.0)), {"temperature_image": 4.0}),
], ids=["coop", "coop-csc-middle", "coop-init-front", "pomp", "taidpt"])  # fmt: skip
def test_round_trip_is_bit_exact(clip, tmp_path, build, lacks):
    model = trained(build(clip))
    state = model.prompt_state_dict()
    path = tmp_path / "prompt_learner" / "model.pth.tar-50"
    written = export_prompt(state, path)
    assert written["epoch"] == 50 and written["optimizer"] is None  # Dassl's keys; epoch from the file name
    back = import_prompt(path, state["method"], clip_model=clip, classnames=NAMES, **lacks)
    assert_same_state(back, state)
    torch.testing.assert_close(features(load_prompt(clip, back, NAMES)), features(model), rtol=0, atol=0)


@needs_vocab
def test_float16_export_is_the_official_default_precision(clip, tmp_path):
    state = trained(CoOp(clip, NAMES, CoOpConfig(n_ctx=4))).prompt_state_dict()
    written = export_prompt(state, tmp_path / "model.pth.tar-5", "pomp", dtype=torch.float16)
    assert written["state_dict"]["ctx"].dtype == torch.float16
    back = import_prompt(tmp_path / "model.pth.tar-5", "pomp")  # a CoOp prompt is a POMP prompt: the same tensor
    assert torch.equal(back["ctx"], state["ctx"].half().float())  # fp16 widens exactly


@pytest.mark.parametrize("visual_prompt", [PaddingPrompt(8, 16), AdditivePrompt(16, 3)], ids=["cnn", "clip"])
def test_ilmvp_round_trip(tmp_path, visual_prompt):
    source = SimpleNamespace(n_cls=20)
    model = trained(ILMVP(source, visual_prompt, 5, ILMVPConfig(mapping="rlm", seed=3)))
    state = model.prompt_state_dict()
    written = export_prompt(state, tmp_path / "best.pth", visual_prompt=visual_prompt, epoch=7)
    assert sorted(written) == ["best_acc", "epoch", "mapping_sequence", "optimizer_dict", "visual_prompt_dict"]
    back = import_prompt(tmp_path / "best.pth", "ilmvp", visual_prompt=visual_prompt, mapping="rlm", seed=3)
    assert_same_state(back, state)


# ----------------------------------------------------------------------------- official files in
COOP_BUFFERS = ("token_prefix", "token_suffix")  # trainers/coop.py PromptLearner
POMP_BUFFERS = ("train_token_prefix", "train_token_suffix", "test_token_prefix", "test_token_suffix")  # pomp.py's


def official_coop_file(clip, names, ctx, buffers=COOP_BUFFERS):
    """What Dassl's save_model writes for CoOp's (or POMP's) PromptLearner under PREC fp16 after 50 epochs: its
    state_dict (ctx, and the token embeddings of "X X .. X name." before / after the context), the epoch, SGD and
    cosine states, val_result."""
    n_ctx = ctx.shape[-2]
    tokens = tinyprompt.tokenize([" ".join(["X"] * n_ctx) + f" {name.replace('_', ' ')}." for name in names])
    with torch.no_grad():
        embedding = clip.token_embedding(tokens).half()
    state_dict = {"ctx": ctx.half()}
    for name in buffers:  # *_prefix: SOS; *_suffix: the name, ".", EOT and padding
        state_dict[name] = embedding[:, :1] if name.endswith("prefix") else embedding[:, 1 + n_ctx:]
    weights = nn.Parameter(ctx.float().clone())  # the trainer's own copy: its step leaves `ctx` alone
    optimizer = torch.optim.SGD([weights], lr=0.002, momentum=0.9)
    weights.grad = torch.ones_like(weights)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 50.0)
    return {"state_dict": state_dict, "epoch": 50, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "val_result": None}  # fmt: skip


@needs_vocab
@pytest.mark.parametrize("method, position", [("coop", "end"), ("coop", "middle"), ("pomp", "end")])
def test_official_file_imports_with_the_same_text_features(clip, tmp_path, method, position):
    ctx = torch.randn(4, 32, generator=torch.Generator().manual_seed(2)) * 0.1
    official = official_coop_file(clip, NAMES, ctx, POMP_BUFFERS if method == "pomp" else COOP_BUFFERS)
    path = tmp_path / "prompt_learner" / "model.pth.tar-50"
    path.parent.mkdir()
    torch.save(official, path)
    given = {} if position == "end" else {"class_token_position": position}
    state = import_prompt(path, method, clip_model=clip, n_ctx=4, **given)
    assert torch.equal(state["ctx"], ctx.half().float())  # what the fp16 file holds, widened exactly
    config = {"n_ctx": 4, "class_token_position": position}
    for names in (NAMES, OTHER):  # a shared context transfers to any class list, as the official loaders use it
        cls, config_cls = (CoOp, CoOpConfig) if method == "coop" else (POMP, POMPConfig)
        reference = cls(clip, names, config_cls(**config))
        with torch.no_grad():
            reference.ctx.copy_(state["ctx"])
        torch.testing.assert_close(features(load_prompt(clip, state, names)), features(reference), rtol=0, atol=0)


@needs_vocab
def test_official_taidpt_file_imports(clip, tmp_path):
    generator = torch.Generator().manual_seed(4)
    ctx, ctx_double = (torch.randn(4, 32, generator=generator) * 0.1 for _ in range(2))
    sentences = official_coop_file(clip, NAMES, ctx)["state_dict"]  # the class sentences' token buffers
    buffers = {"token_prefix": sentences["token_prefix"], "token_suffix": sentences["token_suffix"],
               "token_suffix_nocls": torch.zeros_like(sentences["token_suffix"])}  # all dropped on import
    scalars = {"temperature": torch.tensor(3.0), "spatial_T": torch.tensor(3.0), "ranking_scale": torch.tensor(4.0)}
    state_dict = {**buffers, "ctx": ctx, "ctx_double": ctx_double, **scalars}
    state = import_prompt({"state_dict": state_dict, "epoch": 50, "optimizer": None, "scheduler": None}, "taidpt")
    reference = TaIDPT(clip, OTHER, TaIDPTConfig(n_ctx=4))
    with torch.no_grad():
        reference.ctx_global.copy_(ctx)
        reference.ctx_local.copy_(ctx_double)
    torch.testing.assert_close(features(load_prompt(clip, state, OTHER)), features(reference), rtol=0, atol=0)


# ----------------------------------------------------------------------------- exported files, official loaders
class Official(nn.Module):
    """A stand-in with an official module's parameter and buffer names and shapes: all a state-dict load sees."""

    def __init__(self, params: dict, buffers: dict | None = None):
        super().__init__()
        for name, shape in params.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))
        for name, shape in (buffers or {}).items():
            self.register_buffer(name, torch.zeros(shape))


@needs_vocab
def test_exported_files_load_as_the_official_code_loads_them(clip, tmp_path):
    coop = trained(CoOp(clip, NAMES, CoOpConfig(n_ctx=4))).prompt_state_dict()
    path = tmp_path / "prompt_learner" / "model.pth.tar-50"
    export_prompt(coop, path)
    # CoOp trainers/coop.py load_model: torch.load, drop the token buffers, load_state_dict(strict=False)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict, epoch = checkpoint["state_dict"], checkpoint["epoch"]
    learner = Official({"ctx": (4, 32)}, {"token_prefix": (2, 1, 32), "token_suffix": (2, 72, 32)})  # other classes
    assert learner.load_state_dict(state_dict, strict=False).unexpected_keys == [] and epoch == 50
    assert torch.equal(learner.ctx, coop["ctx"])
    # ZSSeg's POMPPromptExtractor: the keys containing "ctx" into its parameter `ctx`; Detic: ["state_dict"]["ctx"]
    extractor = Official({"ctx": (4, 32)})
    assert extractor.load_state_dict({k: v for k, v in state_dict.items() if "ctx" in k}, strict=False) == ([], [])
    assert checkpoint["state_dict"]["ctx"].size(0) == 4  # Detic's n_ctx
    # TaI-DPT's load_model: like CoOp's; token_suffix_nocls stays the model's own
    taidpt = trained(TaIDPT(clip, NAMES, TaIDPTConfig(n_ctx=4))).prompt_state_dict()
    export_prompt(taidpt, path)
    learner = Official({"ctx": (4, 32), "ctx_double": (4, 32), "temperature": (), "spatial_T": (), "ranking_scale": ()},
                       {"token_prefix": (2, 1, 32), "token_suffix": (2, 72, 32), "token_suffix_nocls": (2, 72, 32)})
    state_dict = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    result = learner.load_state_dict(state_dict, strict=False)
    assert result.unexpected_keys == [] and sorted(result.missing_keys) == ["token_prefix", "token_suffix",
                                                                            "token_suffix_nocls"]
    assert torch.equal(learner.ctx_double, taidpt["ctx_local"]) and float(learner.temperature.detach()) == 3.0


def test_exported_ilmvp_file_loads_strictly(tmp_path):
    prompt = PaddingPrompt(8, 16)
    state = trained(ILMVP(SimpleNamespace(n_cls=20), prompt, 5, ILMVPConfig(mapping="rlm"))).prompt_state_dict()
    export_prompt(state, tmp_path / "best.pth", visual_prompt=prompt)
    checkpoint = torch.load(tmp_path / "best.pth", map_location="cpu", weights_only=True)
    official = Official({"program": (3, 16, 16)}, {"mask": (3, 16, 16)})  # models/visual_prompt.py's names
    official.load_state_dict(checkpoint["visual_prompt_dict"])  # strict, as a user of the official module loads it
    assert torch.equal(official.program, state["prompt"]) and torch.equal(official.mask, prompt.mask)
    assert torch.equal(checkpoint["mapping_sequence"], state["mapping"])


# ----------------------------------------------------------------------------- safety and errors
def test_pickled_objects_are_refused_with_the_way_to_convert(tmp_path):
    # Dassl's warm-up scheduler keeps its successor scheduler object in its state: torch.load(weights_only) refuses it
    ctx = nn.Parameter(torch.randn(4, 32))
    optimizer = torch.optim.SGD([ctx], lr=0.002)
    scheduler = {"successor": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 50.0), "warmup_epoch": 1}
    path = tmp_path / "model.pth.tar-50"
    torch.save({"state_dict": {"ctx": ctx.detach()}, "epoch": 50, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler}, path)  # fmt: skip
    one_line_error(lambda: import_prompt(path, "coop"), "does not unpickle", "CosineAnnealingLR", "weights_only=False")
    trusted = torch.load(path, map_location="cpu", weights_only=False)  # what the message tells a user who trusts it
    assert torch.equal(import_prompt(trusted, "coop")["ctx"], ctx.detach())


def test_unknown_layouts_fail_clearly(tmp_path):
    ctx = torch.randn(4, 32)
    one_line_error(lambda: import_prompt({"visual_prompt_dict": {}, "mapping_sequence": None}, "coop"),
                   "not a Dassl checkpoint", "visual_prompt_dict")
    one_line_error(lambda: import_prompt({"state_dict": {"ctx": ctx, "meta_net.linear1.weight": ctx}}, "coop"),
                   "meta_net.linear1.weight", "not a coop prompt learner")
    one_line_error(lambda: import_prompt({"state_dict": {"token_prefix": ctx}}, "pomp"), "no tensor ['ctx']")
    one_line_error(lambda: import_prompt({"method": "coop", "ctx": ctx}, "coop"), "already a tinyprompt prompt")
    one_line_error(lambda: import_prompt({"state_dict": {"ctx": ctx}}, "ship"), "saves neither its generator")
    one_line_error(lambda: export_prompt({"method": "ship"}, tmp_path / "x"), "saves neither its generator")
    one_line_error(lambda: import_prompt({"state_dict": {"ctx": ctx}}, "clip-adapter"), "no official file format")
    one_line_error(lambda: import_prompt(tmp_path / "missing.pth.tar", "coop"), "does not exist")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    one_line_error(lambda: import_prompt(tmp_path / "notes.txt", "coop"), "not a file torch.load can read")
    one_line_error(lambda: import_prompt({"model": {}}, "ilmvp", visual_prompt=PaddingPrompt(8, 16)),
                   "not an ILM-VP checkpoint")


def test_wrong_shapes_fail_clearly():
    file = {"state_dict": {"ctx": torch.randn(4, 32)}, "epoch": 50}
    one_line_error(lambda: import_prompt(file, "coop", n_ctx=16), "n_ctx=4", "not the n_ctx=16 asked")
    wide = SimpleNamespace(text_width=64)
    one_line_error(lambda: import_prompt(file, "coop", clip_model=wide), "(4, 32), width 32", "text width is 64")
    one_line_error(lambda: import_prompt(file, "coop", ctx_init="a photo of"), "shared context of 3")
    one_line_error(lambda: import_prompt(file, "coop", position="end"), "['position'] are not CoOpConfig fields")
    one_line_error(lambda: import_prompt(file, "coop", class_token_position="back"), "class_token_position")
    csc = {"state_dict": {"ctx": torch.randn(3, 4, 32)}}
    one_line_error(lambda: import_prompt(csc, "coop", classnames=["a", "b"]), "3 classes", "got 2")
    one_line_error(lambda: import_prompt(csc, "pomp"), "(3, 4, 32)", "CSC=True")
    learned = {"state_dict": {"ctx": torch.randn(4, 32), "ctx_double": torch.randn(4, 32),
                              "temperature": torch.tensor(2.5)}}
    one_line_error(lambda: import_prompt(learned, "taidpt"), "'temperature'] is 2.5", "IF_LEARN_SCALE")
    uneven = {"state_dict": {"ctx": torch.randn(4, 32), "ctx_double": torch.randn(2, 32)}}
    one_line_error(lambda: import_prompt(uneven, "taidpt"), "(4, 32)", "(2, 32)")
    ilmvp = {"visual_prompt_dict": {"program": torch.zeros(3, 16, 16), "mask": PaddingPrompt(10, 16).mask},
             "mapping_sequence": torch.arange(5)}  # fmt: skip
    one_line_error(lambda: import_prompt(ilmvp, "ilmvp"), "pass visual_prompt=")
    one_line_error(lambda: import_prompt(ilmvp, "ilmvp", visual_prompt=PaddingPrompt(8, 16)), "mask lets 468 of 768")
    one_line_error(lambda: import_prompt(ilmvp, "ilmvp", visual_prompt=PaddingPrompt(8, 32)), "(3, 16, 16)",
                   "(3, 32, 32)")
    state = {"method": "coop", "ctx": torch.randn(4, 32)}
    one_line_error(lambda: export_prompt(state, "x.pth", "taidpt"), "cannot be written in the 'taidpt' format")
    one_line_error(lambda: export_prompt(state, "x.pth", dtype=torch.bfloat16), "float32 or float16")


# ----------------------------------------------------------------------------- the commands
@needs_vocab
def test_commands_end_to_end(clip, tmp_path, capsys):
    model = trained(CoOp(clip, NAMES, CoOpConfig(n_ctx=4, class_token_position="middle")))
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    torch.save(model.prompt_state_dict(), run / "prompt.pt")
    official = tmp_path / "output" / "prompt_learner" / "model.pth.tar-50"
    assert main(["export-prompt", "--prompt", str(run / "prompt.pt"), "--format", "coop", "--out", str(official)]) == 0
    out = capsys.readouterr().out
    assert "coop layout, ctx (4, 32) float32, epoch 50" in out and "--load-epoch N" in out
    assert "class_token_position='middle'" in out  # what the official run must be told: the file does not say
    imported = tmp_path / "prompt.pt"
    command = ["import-prompt", "--file", str(official), "--method", "coop", "--out", str(imported)]
    assert main([*command, "--n-ctx", "4"]) == 0
    out = capsys.readouterr().out
    assert "class_token_position = 'end': not in the file, the official default" in out  # printed, not silent
    assert read_prompt(imported)["config"]["class_token_position"] == "end"
    assert main([*command, "--class-token-position", "middle"]) == 0
    assert "class_token_position" not in capsys.readouterr().out
    state = read_prompt(imported)
    assert torch.equal(state["ctx"], model.ctx.detach()) and state["config"] == model.prompt_state_dict()["config"]
    torch.testing.assert_close(features(load_prompt(clip, imported, OTHER)),
                               features(load_prompt(clip, run / "prompt.pt", OTHER)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not the n_ctx=16 asked"):
        main([*command, "--n-ctx", "16"])


@pytest.mark.skipif(not (GOLDEN / "clip" / "clip_tiny_vit.pt").is_file(), reason="needs the golden tiny CLIP file")
def test_import_command_checks_the_width_against_a_model(tmp_path):
    model = tmp_path / "tiny_vit.pt"  # a CLIP checkpoint file, as --model takes it (text width 64)
    torch.save(torch.load(GOLDEN / "clip" / "clip_tiny_vit.pt", weights_only=True)["state_dict"], model)
    torch.save({"state_dict": {"ctx": torch.randn(4, 32)}, "epoch": 50}, tmp_path / "model.pth.tar-50")
    command = ["import-prompt", "--file", str(tmp_path / "model.pth.tar-50"), "--method", "pomp", "--out",
               str(tmp_path / "prompt.pt"), "--model", str(model)]  # fmt: skip
    with warnings.catch_warnings(), pytest.raises(ValueError, match="width 32, but this CLIP's text width is 64"):
        warnings.simplefilter("ignore")  # a checkpoint file's head width is assumed (hub.load says so)
        main(command)


ILMVP_FLAGS = {"cnn": (lambda: PaddingPrompt(8, 16), ["--image-size", "8", "--input-size", "16"]),
               "clip": (lambda: AdditivePrompt(16, 3), ["--pad", "3", "--input-size", "16"])}  # fmt: skip


@pytest.mark.parametrize("kind", ILMVP_FLAGS)
def test_ilmvp_commands_export_and_import_its_official_file(tmp_path, capsys, kind):
    make_prompt, flags = ILMVP_FLAGS[kind]
    model = trained(ILMVP(SimpleNamespace(n_cls=20), make_prompt(), 5, class_names=OTHER + ["x", "y", "z"]))
    model.mapping.copy_(torch.tensor([7, 2, 19, 0, 11]))  # as an ILM pass leaves it
    state = model.prompt_state_dict()
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    torch.save(state, run / "prompt.pt")
    torch.save({"epoch": 3, "prompt": state}, run / "checkpoint.pt")  # the prompt inside a training checkpoint
    reference = export_prompt(state, tmp_path / "api.pth", visual_prompt=model.prompt)
    for source in ("prompt.pt", "checkpoint.pt"):
        official = tmp_path / "results" / "best.pth"
        assert main(["export-prompt", "--prompt", str(run / source), "--out", str(official), *flags]) == 0
        assert "ilmvp layout, program (3, 16, 16) float32, mask (3, 16, 16) float32, mapping_sequence (5,) int64" \
            in capsys.readouterr().out
        written = torch.load(official, map_location="cpu", weights_only=True)
        assert_same_state(written["visual_prompt_dict"], reference["visual_prompt_dict"])  # what the API writes
        assert torch.equal(written["mapping_sequence"], state["mapping"]) and written["epoch"] == 0
    command = ["import-prompt", "--file", str(official), "--method", "ilmvp", "--out"]
    assert main([*command, str(tmp_path / "back.pt"), *flags]) == 0
    assert "load_prompt_state_dict" in capsys.readouterr().out
    back = read_prompt_file(tmp_path / "back.pt")
    assert_same_state({**back, "classnames": state["classnames"]}, state)  # the file holds no class names
    fresh = ILMVP(SimpleNamespace(n_cls=20), make_prompt(), 5)
    fresh.load_prompt_state_dict(back)
    assert torch.equal(fresh.prompt.prompt, model.prompt.prompt) and torch.equal(fresh.mapping, model.mapping)


def test_ilmvp_commands_check_the_prompt_flags(tmp_path):
    state = trained(ILMVP(SimpleNamespace(n_cls=20), PaddingPrompt(8, 16), 5)).prompt_state_dict()
    torch.save(state, tmp_path / "prompt.pt")
    export = ["export-prompt", "--prompt", str(tmp_path / "prompt.pt"), "--out", str(tmp_path / "best.pth")]
    one_line_error(lambda: main(export), "pass the one flag", "got neither")
    one_line_error(lambda: main([*export, "--image-size", "8", "--pad", "3"]), "got --image-size and --pad")
    one_line_error(lambda: main([*export, "--image-size", "8"]), "(3, 16, 16)", "--input-size 224 makes (3, 224, 224)")
    one_line_error(lambda: main([*export, "--dtype", "float16", "--image-size", "8", "--input-size", "16"]),
                   "use float32")
    main([*export, "--image-size", "8", "--input-size", "16"])
    importing = ["import-prompt", "--file", str(tmp_path / "best.pth"), "--method", "ilmvp", "--out",
                 str(tmp_path / "back.pt")]  # fmt: skip
    one_line_error(lambda: main([*importing, "--pad", "3", "--input-size", "16"]), "mask lets 576 of 768",
                   "this prompt's 468")
    one_line_error(lambda: main([*importing, "--image-size", "8"]), "(3, 16, 16)", "(3, 224, 224)")
    coop = {"method": "coop", "config": {}, "classnames": [], "ctx": torch.zeros(4, 32)}
    torch.save(coop, tmp_path / "coop.pt")
    one_line_error(lambda: main(["export-prompt", "--prompt", str(tmp_path / "coop.pt"), "--out", str(tmp_path / "m"),
                                 "--pad", "3"]), "--pad describe an ILM-VP prompt")  # fmt: skip


@needs_vocab
def test_commands_write_and_read_safetensors_prompts(clip, tmp_path, capsys):
    pytest.importorskip("safetensors", reason="the optional safetensors package is not installed")
    model = trained(TaIDPT(clip, NAMES, TaIDPTConfig(n_ctx=4, temperature_image=4.0)))
    state = model.prompt_state_dict()
    torch.save(state, tmp_path / "prompt.pt")
    export = ["export-prompt", "--prompt", str(tmp_path / "prompt.pt"), "--out"]
    assert main([*export, str(tmp_path / "a.safetensors")]) == 0  # by the suffix
    assert "safetensors, ctx_global (4, 32) float32, ctx_local (4, 32) float32" in capsys.readouterr().out
    assert main([*export, str(tmp_path / "b.safetensors"), "--format", "safetensors"]) == 0
    for name in ("a", "b"):
        assert_same_state(read_prompt(tmp_path / f"{name}.safetensors"), state)
    torch.testing.assert_close(features(load_prompt(clip, tmp_path / "a.safetensors", OTHER)),
                               features(load_prompt(clip, state, OTHER)), rtol=0, atol=0)
    # and back to an official file from the .safetensors prompt; import-prompt writes .safetensors too
    official = tmp_path / "prompt_learner" / "model.pth.tar-5"
    assert main(["export-prompt", "--prompt", str(tmp_path / "a.safetensors"), "--out", str(official)]) == 0
    command = ["import-prompt", "--file", str(official), "--method", "taidpt", "--out", str(tmp_path / "c.safetensors")]
    assert main(command) == 0
    assert_same_state(read_prompt(tmp_path / "c.safetensors"), import_prompt(official, "taidpt"))
    one_line_error(lambda: main([*export, str(tmp_path / "x.safetensors"), "--format", "coop"]),
                   "reads its file with torch.load", "--format safetensors")
    one_line_error(lambda: main([*export, str(tmp_path / "x.safetensors"), "--dtype", "float16"]),
                   "--dtype describe an official file")
    one_line_error(lambda: main([*export, str(tmp_path / "x.pt"), "--format", "safetensors"]), "name it *.safetensors")
