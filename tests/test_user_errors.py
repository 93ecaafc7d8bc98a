"""Nothing lost, nothing silent: duplicate class names, a model's own tokenizer wherever it goes, --device
without CUDA, and `tinyprompt models`; each mistake ends in one line naming the problem and the fix."""
import shutil
import sys
from types import SimpleNamespace

import pytest
import torch

import tinyprompt
from golden import REPO
from tinyprompt import tokenizer as tk
from tinyprompt.commands.cli import entry, main
from tinyprompt.clip_checkpoint import build_model
from tinyprompt.hub import AnyImagePreprocess
from tinyprompt.methods import CoOp
from tinyprompt.prompts import ClassPrompts, prompt_names
from tinyprompt.zeroshot import zeroshot_classifier

DUPLICATES = ["golden_retriever", "cat", "Golden  Retriever", "dog", "cat"]
DUPLICATES_MESSAGE = (
    "duplicate class names: 'golden_retriever' (class 0) = 'Golden  Retriever' (class 2); 'cat' (class 1) = 'cat' "
    "(class 4). Their prompts would be identical ('_' reads as a space, case is ignored), so the prediction "
    "between them is arbitrary: give each class a distinct name"
)
OPENAI_IDS = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 269, 49407]])  # tinyprompt.tokenize("a photo of a cat.")
FOREIGN_IDS_MESSAGE = (
    "token id 49407 is outside this model's 648-token vocabulary: the tokens come from another tokenizer "
    "(tinyprompt.tokenize is OpenAI's); tokenize with the model's own: tinyprompt.tokenize_for(model, texts)"
)
NO_TOKENIZER_MESSAGE = (
    "this model has a 648-token vocabulary but OpenAI's tokenizer (the model carries none of its own) has 49408 ids: "
    "load the model with tinyprompt.load (built-in models carry their tokenizer), or set "
    "model.tokenizer = tinyprompt.tokenizer.get_tokenizer('its_merges.txt')"
)


@pytest.fixture(scope="module")
def synthetic():
    return tinyprompt.load("synthetic")[0]


@pytest.fixture
def no_openai_bpe(monkeypatch, tmp_path):
    """Any request for OpenAI's merges file fails: the built-in model must never need it."""
    monkeypatch.setenv("TINYPROMPT_BPE", str(tmp_path / "no" / "bpe_simple_vocab_16e6.txt.gz"))


def run_entry(monkeypatch, capsys, *argv):
    """(exit code, stdout, stderr) of the console entry point, as a user sees it."""
    monkeypatch.delenv("TINYPROMPT_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["tinyprompt", *map(str, argv)])
    code = entry()
    out, err = capsys.readouterr()
    return code, out, err


def image_folder(root, classes):
    """One random 20x24 PNG per class folder."""
    Image = pytest.importorskip("PIL.Image")
    g = torch.Generator().manual_seed(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        pixels = torch.randint(0, 256, (20, 24, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / name / "img.png")
    return root


# ------------------------------------------------------------------------------ duplicate class names

def test_prompt_names_refuse_names_that_read_the_same():
    assert prompt_names(["golden_retriever", "Cat"]) == ["golden retriever", "Cat"]  # CoOp's "_" -> " "
    with pytest.raises(ValueError) as error:
        prompt_names(DUPLICATES)
    assert str(error.value) == DUPLICATES_MESSAGE


def test_every_prompt_per_class_path_refuses_duplicates(synthetic):
    for build in (lambda: zeroshot_classifier(synthetic, DUPLICATES, ["a photo of a {}."]),
                  lambda: CoOp(synthetic, DUPLICATES),
                  lambda: ClassPrompts(synthetic, DUPLICATES, n_ctx=4)):  # fmt: skip
        with pytest.raises(ValueError) as error:
            build()
        assert str(error.value) == DUPLICATES_MESSAGE


def test_cli_zeroshot_and_export_refuse_duplicate_classes(synthetic, tmp_path, monkeypatch, capsys):
    data = image_folder(tmp_path / "data", ["a", "b", "c"])
    code, _, err = run_entry(monkeypatch, capsys, "zeroshot", "--model", "synthetic", "--data", data,
                             "--classes", "cat,dog,Cat")  # fmt: skip
    assert code == 2
    assert err == ("tinyprompt: error: duplicate class names: 'cat' (class 0) = 'Cat' (class 2). Their prompts "
                   "would be identical ('_' reads as a space, case is ignored), so the prediction between them is "
                   "arbitrary: give each class a distinct name\n")

    prompt = tmp_path / "prompt.pt"
    torch.save(CoOp(synthetic, ["cat", "dog"]).prompt_state_dict(), prompt)
    classes = tmp_path / "names.txt"
    classes.write_text("golden_retriever\ncat\ngolden retriever\n")
    code, _, err = run_entry(monkeypatch, capsys, "export-classifier", "--prompt", prompt, "--model", "synthetic",
                             "--classes", classes, "--out", tmp_path / "out.npy")  # fmt: skip
    assert code == 2 and not (tmp_path / "out.npy").exists()
    assert err == ("tinyprompt: error: duplicate class names: 'golden retriever' (class 0) = 'golden retriever' "
                   "(class 2). Their prompts would be identical ('_' reads as a space, case is ignored), so the "
                   "prediction between them is arbitrary: give each class a distinct name\n")


# ------------------------------------------------------------------ a model carries its tokenizer

def test_builtin_model_by_path_is_the_model_by_name(synthetic, tmp_path, no_openai_bpe):
    copy = tmp_path / "elsewhere.pt"
    shutil.copyfile(REPO / "weights" / "synthetic.pt", copy)
    model, preprocess = tinyprompt.load(copy)
    assert model.tokenizer is synthetic.tokenizer and model.tokenizer.vocab_size == model.vocab_size == 648
    assert isinstance(preprocess, AnyImagePreprocess)
    tokens = tinyprompt.tokenize_for(model, ["a red circle.", "a blue square."])  # (2, 48): its own context length
    assert torch.equal(tokens, tk.tokenize(["a red circle.", "a blue square."], 48, tokenizer=synthetic.tokenizer))
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), synthetic.encode_text(tokens))


def test_cli_zeroshot_runs_the_builtin_model_by_path(tmp_path, no_openai_bpe, monkeypatch, capsys):
    data = image_folder(tmp_path / "data", ["circle", "square"])
    code, out, err = run_entry(monkeypatch, capsys, "zeroshot", "--model", REPO / "weights" / "synthetic.pt",
                               "--data", data, "--templates", "single")  # fmt: skip
    assert (code, err) == (0, "")
    assert "2 images, 2 classes, 1 templates" in out and "top-1 accuracy: " in out


def test_openai_ids_into_a_smaller_vocabulary_are_one_clear_error(synthetic):
    for encode in (synthetic.encode_text, synthetic.encode_text_tokens):
        with pytest.raises(ValueError) as error:
            encode(OPENAI_IDS)
        assert str(error.value) == FOREIGN_IDS_MESSAGE


def test_a_model_without_its_tokenizer_is_refused_before_tokenizing(synthetic, no_openai_bpe):
    bare = build_model(synthetic.state_dict())  # the built-in weights, re-saved and rebuilt: no tokenizer
    for use in (lambda: tinyprompt.tokenize_for(bare, ["a cat."]), lambda: CoOp(bare, ["cat", "dog"])):
        with pytest.raises(ValueError) as error:
            use()
        assert str(error.value) == NO_TOKENIZER_MESSAGE


def test_openai_sized_models_keep_openais_tokenizer(monkeypatch):
    monkeypatch.setattr(tk, "get_tokenizer", lambda: "OpenAI's")
    assert tk.model_tokenizer(SimpleNamespace(vocab_size=49408)) == "OpenAI's"
    assert tk.model_tokenizer(SimpleNamespace(vocab_size=49408, tokenizer=None)) == "OpenAI's"


# ------------------------------------------------------------------------------------ the CLI

def test_cli_zeroshot_device_cuda_without_cuda_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_entry(monkeypatch, capsys, "zeroshot", "--model", "synthetic", "--data", tmp_path,
                             "--device", "cuda")  # fmt: skip
    assert code == 2
    assert err == ("tinyprompt: error: --device cuda: CUDA is not available on this machine; "
                   "use --device cpu (or auto)\n")


def test_models_lists_names_sizes_local_copies_and_the_builtin(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # OpenAI's cache ~/.cache/clip: empty
    cached = tmp_path / "cache" / "clip" / "ViT-B-32.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not verified until loaded")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model              size  on this machine"
    assert lines[1] == "RN50             255 MB  not cached: downloaded on first use"
    assert lines[6] == f"ViT-B/32         353 MB  cached: {cached}"
    assert lines[-2] == "synthetic        1.5 MB  built in, with its own 648-token vocabulary"
    assert lines[-1] == "--model also takes a checkpoint path (an OpenAI .pt archive or a saved state dict)."
    assert len(lines) == 1 + len(tinyprompt.available_models()) + 1 + 1


@pytest.mark.parametrize("command", ["zeroshot", "eval", "export-classifier", "train coop", "train taidpt",
                                     "train pomp", "train ship"])
def test_model_help_points_to_tinyprompt_models(command, capsys):
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(see `tinyprompt models`) or checkpoint path" in text and "available_models" not in text


def test_coops_imagenet_classnames_file_gives_human_names_everywhere(tmp_path):
    """CoOp's ImageNet classnames.txt is "wnid name" per line, space separated: read as one name per line it gave
    names like "n01440764 tench", silently. --classes, export-classifier's class file and the registry read it."""
    from tinyprompt.commands.args import class_names
    from tinyprompt.data.largelabel import read_class_list

    path = tmp_path / "classnames.txt"
    path.write_text("n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n")
    assert read_class_list(path) == ["tench", "goldfish", "great white shark"]
    folders = ["n01443537", "n01484850", "n01440764"]  # names go by folder, whatever the file's order
    assert class_names(str(path), folders, tmp_path) == ["goldfish", "great white shark", "tench"]
    path.write_text("tench\ngoldfish\ngreat white shark\n")  # plain names stay plain names
    assert read_class_list(path) == ["tench", "goldfish", "great white shark"]
