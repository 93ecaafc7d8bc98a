"""Zero-shot: templates and classifier weights against CoOp's golden outputs, and the `zeroshot` command."""
import csv
import json
import re

import pytest
import torch

from golden import GOLDEN, golden_params, load as load_golden
from tolerance import rounding_bound, tower_depth
from tinyprompt import hub
from tinyprompt.commands.cli import main
from tinyprompt.clip_checkpoint import build_model
from tinyprompt.templates import CUSTOM_TEMPLATES, IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT, get_templates
from tinyprompt.tokenizer import tokenize
from tinyprompt.zeroshot import format_prompts, template_features, zeroshot_classifier, zeroshot_logits

TINY = GOLDEN / "clip" / "clip_tiny_vit.pt"
needs_tiny = pytest.mark.skipif(not TINY.is_file(), reason=f"golden file {TINY} not found (set TINYPROMPT_GOLDEN)")


def golden_cases():
    """One param per (golden file, variant): every dict in the file that has `templates`."""
    cases = []
    for param in golden_params("coop/zeroshot_*.pt"):
        path = param.values[0]
        if path is None:  # no golden root: one skipped case, with golden_params' reason
            return [pytest.param(None, None, id=param.id, marks=param.marks)]
        data = load_golden(path)
        cases += [pytest.param(path, key, id=f"{path.stem}-{key}")
                  for key, value in data.items() if isinstance(value, dict) and "templates" in value]
    return cases


_MODELS = {}


def backbone(model_file: str):
    """The golden backbone named by a zero-shot file (TorchScript archives go through the hub loader)."""
    if model_file not in _MODELS:
        path = GOLDEN / model_file
        is_archive = path.stem.endswith("_jit")
        _MODELS[model_file] = hub.load(path)[0] if is_archive else build_model(load_golden(path)["state_dict"])
    return _MODELS[model_file]


def spec_for(variant: str, dataset: str) -> str:
    """Our template spec for a golden variant, by CoOp's rules (ZeroshotCLIP / ZeroshotCLIP2)."""
    if variant.startswith("single"):
        return dataset  # ZeroshotCLIP: the dataset's one template
    if variant.startswith("ensemble7"):  # ZeroshotCLIP2 adds the dataset template except on ImageNet
        return "ensemble7" if dataset == "ImageNet" else f"ensemble7+{dataset}"
    raise AssertionError(f"golden variant {variant!r} has no known template rule: extend spec_for")


# ---------------------------------------------------------------------------------------- templates

@pytest.mark.parametrize("path", golden_params("coop/zeroshot_*.pt"))
def test_template_lists_are_coops(path):
    data = load_golden(path)
    assert list(IMAGENET_TEMPLATES) == data["IMAGENET_TEMPLATES"] and len(IMAGENET_TEMPLATES) == 80
    assert list(IMAGENET_TEMPLATES_SELECT) == data["IMAGENET_TEMPLATES_SELECT"]
    assert CUSTOM_TEMPLATES == data["CUSTOM_TEMPLATES"]


def test_get_templates(tmp_path):
    assert get_templates("single") == ["a photo of a {}."]
    assert get_templates("eurosat") == ["a centered satellite photo of {}."]  # dataset names in any case
    assert get_templates("ensemble7") == list(IMAGENET_TEMPLATES_SELECT)
    assert get_templates("imagenet80") == list(IMAGENET_TEMPLATES)
    assert get_templates("ensemble7+OxfordFlowers")[-1] == "a photo of a {}, a type of flower."
    got = get_templates("single")
    got.append("x {}")  # callers get a fresh list: nothing shared is mutated (CoOp's ZeroshotCLIP2 quirk)
    assert get_templates("single") == ["a photo of a {}."]
    path = tmp_path / "mine.txt"
    path.write_text("# my templates\na {} in the wild.\n\n  a sketch of {}.  \n")
    assert get_templates(str(path)) == ["a {} in the wild.", "a sketch of {}."]


def test_get_templates_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown templates 'ensemble8'.*single, ensemble7, imagenet80.*OxfordPets"):
        get_templates("ensemble7+ensemble8")
    path = tmp_path / "bad.txt"
    path.write_text("a photo of {}.\na photo.\n")
    with pytest.raises(ValueError, match=r"bad.txt line 2: 'a photo.' must contain exactly one '\{\}'"):
        get_templates(str(path))
    path.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="holds no templates"):
        get_templates(str(path))


def test_format_prompts():
    assert format_prompts(["golden_retriever", "cat"], ["a {}.", "the {}!"]) == [
        "a golden retriever.", "a cat.", "the golden retriever!", "the cat!"]  # template-major, "_" -> " "
    with pytest.raises(ValueError, match="no class names"):
        format_prompts([], ["a {}."])
    with pytest.raises(ValueError, match="'a photo.' must contain exactly one"):
        format_prompts(["cat"], ["a photo."])


# ------------------------------------------------------------------------------------ golden parity

@pytest.mark.parametrize("path, variant", golden_cases())
def test_zeroshot_matches_coop(path, variant):
    data = load_golden(path)
    case = data[variant]
    classnames = data["classnames"]
    templates = get_templates(spec_for(variant, case["dataset"]))
    assert templates == case["templates"]

    T, C = len(templates), len(classnames)
    tokens = tokenize(format_prompts(classnames, templates)).view(T, C, -1)
    assert torch.equal(tokens, case["tokenized"])

    model = backbone(data["model_file"])
    features = template_features(model, classnames, templates, batch_size=3)  # batches cross templates
    torch.testing.assert_close(features, case["per_template_text_features"], atol=1e-5, rtol=0)
    classifier = zeroshot_classifier(model, classnames, templates)
    torch.testing.assert_close(classifier, case["classifier"], atol=1e-5, rtol=0)
    torch.testing.assert_close(zeroshot_logits(model, data["image"], classifier), case["logits"], atol=1e-4, rtol=0)
    with torch.no_grad():
        image_features = torch.nn.functional.normalize(model.encode_image(data["image"]), dim=-1)
    torch.testing.assert_close(image_features, data["image_features"], atol=1e-5, rtol=0)
    assert model.logit_scale.item() == pytest.approx(data["logit_scale"], abs=1e-6)


# ------------------------------------------------------------------------------------------ the CLI

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    if not TINY.is_file():
        pytest.skip(f"golden file {TINY} not found (set TINYPROMPT_GOLDEN)")
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(load_golden(TINY)["state_dict"], path)  # a plain state dict, made at test time
    return path


def image_folder(root, classes, per_class=2):
    """Random-noise images (sizes vary, so resize and crop run) in one folder per class."""
    Image = pytest.importorskip("PIL.Image")
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        for i in range(per_class):
            h, w = 30 + 7 * i, 40 + 5 * c
            pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name / f"img{i}.png")
    return root


def run_cli(capsys, *args):
    assert main(["zeroshot", *map(str, args)]) == 0
    return capsys.readouterr().out


def printed(out, which):
    match = re.search(rf"top-{which} accuracy: ([\d.]+)% \((\d+)/(\d+)\)", out)
    assert match, out
    return float(match[1]), int(match[2]), int(match[3])


def test_cli_accuracy_agrees_with_predictions_csv(tiny_checkpoint, tmp_path, capsys):
    data = image_folder(tmp_path / "data", ["dog", "golden_retriever", "tabby_cat"], per_class=3)
    out_file = tmp_path / "out" / "pred.csv"
    out = run_cli(capsys, "--model", tiny_checkpoint, "--data", data, "--templates", "ensemble7",
                  "--batch-size", 4, "--predictions", out_file)
    assert "top-5" not in out  # fewer than 5 classes
    percent, correct, total = printed(out, 1)
    with open(out_file, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(p) for p in sorted(data.glob("*/*.png"))]
    assert total == len(rows) == 9
    assert correct == sum(r["true"] == r["predicted"] for r in rows)
    assert percent == pytest.approx(100 * correct / total, abs=5e-3)
    assert all(r["true"] == p.parent.name for r, p in zip(rows, sorted(data.glob("*/*.png"))))

    # the file's predictions are the library's: argmax of zeroshot_logits over the same classifier
    model, preprocess = hub.load(tiny_checkpoint)
    names = ["dog", "golden_retriever", "tabby_cat"]
    classifier = zeroshot_classifier(model, names, get_templates("ensemble7"))
    from tinyprompt.data.folder import open_image
    images = torch.stack([preprocess(open_image(r["path"])) for r in rows])
    probs = zeroshot_logits(model, images, classifier).softmax(-1)
    assert [names[i] for i in probs.argmax(-1).tolist()] == [r["predicted"] for r in rows]
    scores = torch.tensor([float(r["score"]) for r in rows])
    # the file rounds to 6 decimals; the command batched the images its own way (rounding through the tower)
    k, depth = tower_depth(model.visual.transformer, 3 * model.visual.conv1.kernel_size[0] ** 2)
    torch.testing.assert_close(probs.max(-1).values, scores, atol=5e-7 + rounding_bound(scores, k, depth + 3), rtol=0)


def test_cli_display_names_top5_and_jsonl(tiny_checkpoint, tmp_path, capsys):
    folders = ["a", "b", "c", "d", "e", "f"]
    data = image_folder(tmp_path / "data", folders, per_class=1)
    out_file = tmp_path / "pred.jsonl"
    names = "apple,banana,cherry,date,elderberry,fig"
    out = run_cli(capsys, "--model", tiny_checkpoint, "--data", data, "--classes", names,
                  "--templates", "single", "--predictions", out_file)
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["true"] for r in rows] == names.split(",")
    _, correct, total = printed(out, 1)
    assert (correct, total) == (sum(r["true"] == r["predicted"] for r in rows), 6)
    _, correct5, _ = printed(out, 5)
    assert correct <= correct5 <= total


def test_cli_classes_file_with_folder_mapping(tiny_checkpoint, tmp_path, capsys):
    data = image_folder(tmp_path / "data", ["n01", "n02"], per_class=1)
    mapping = tmp_path / "names.txt"
    mapping.write_text("n02\tgoldfish\nn01\ttench\nn99\tunused\n")
    out_file = tmp_path / "p.csv"
    run_cli(capsys, "--model", tiny_checkpoint, "--data", data, "--classes", mapping, "--predictions", out_file)
    with open(out_file, newline="") as f:
        assert [r["true"] for r in csv.DictReader(f)] == ["tench", "goldfish"]


def test_cli_errors(tiny_checkpoint, tmp_path):
    data = image_folder(tmp_path / "data", ["x", "y"], per_class=1)
    base = ["zeroshot", "--model", str(tiny_checkpoint), "--data", str(data)]
    with pytest.raises(ValueError, match=r"--classes gives 3 names but .* has 2 class folders \(x, y\)"):
        main([*base, "--classes", "p,q,r"])
    with pytest.raises(ValueError, match=r"--predictions .*out.txt: use a file name ending in .csv or .jsonl"):
        main([*base, "--predictions", str(tmp_path / "out.txt")])
    mapping = tmp_path / "names.tsv"
    mapping.write_text("x\tex\ny why\n")
    with pytest.raises(ValueError, match=r"names.tsv line 2: 'y why' is not 'wnid<TAB>name'"):
        main([*base, "--classes", str(mapping)])
    mapping.write_text("x\tex\n")
    with pytest.raises(ValueError, match=r"names.tsv has no name for the class folder\(s\) \['y'\]"):
        main([*base, "--classes", str(mapping)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["zeroshot", "--model", str(tiny_checkpoint), "--data", str(tmp_path / "missing")])


def test_cli_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["zeroshot", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in [("--model", None), ("--data", None), ("--classes", "None"), ("--templates", "ensemble7"),
                          ("--batch-size", "64"), ("--workers", "0"), ("--device", "auto"), ("--predictions", "None")]:
        assert flag in text
        if default is not None:
            assert re.search(rf"{flag} \S+ .*?\(default: {default}\)", text), flag


def test_model_config_reaches_the_loader(tiny_checkpoint, tmp_path, monkeypatch):
    """--model-config: 'openai' says the file was made by OpenAI's code (no warning); a .json file is open_clip's
    model config, read into a dict; an architecture name is that architecture's config from the manifest."""
    import warnings

    data = image_folder(tmp_path / "data", ["cat", "dog"])
    base = ["zeroshot", "--model", str(tiny_checkpoint), "--data", str(data)]
    with pytest.warns(UserWarning, match="OpenAI's are assumed"):
        assert main(base) == 0  # shapes alone cannot tell the activation: said once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([*base, "--model-config", "openai"]) == 0
    seen = []

    def record(state_dict, config):
        seen.append(config)
        raise KeyboardInterrupt  # stop before the model is built

    monkeypatch.setattr(hub, "build_model", record)
    (tmp_path / "config.json").write_text(json.dumps({"embed_dim": 16, "quick_gelu": False}))
    for given in (str(tmp_path / "config.json"), "ViT-B-32"):
        with pytest.raises(KeyboardInterrupt):
            main([*base, "--model-config", given])
    assert seen == [{"embed_dim": 16, "quick_gelu": False}, hub.open_clip_config("ViT-B-32")]
    with pytest.raises(FileNotFoundError, match="model config .*missing.json does not exist"):
        main([*base, "--model-config", str(tmp_path / "missing.json")])
