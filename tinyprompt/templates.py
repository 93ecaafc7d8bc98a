"""Zero-shot prompt templates: CoOp's per-dataset templates, CLIP's 80 ImageNet ones, the 7-template ensemble.

The strings are those of CoOp ("Learning to Prompt for Vision-Language Models", Zhou et al.,
arXiv 2109.01134; `trainers/zsclip.py` and `trainers/imagenet_templates.py`), whose ImageNet list comes
from CLIP's prompt-engineering notebook (Radford et al., arXiv 2103.00020). A template holds one `{}`
that the class name fills. `get_templates(spec)` picks a list by name, so the CLI and the methods
share one vocabulary:

    "single"                  -> ImageNet's dataset template, "a photo of a {}." (CoOp's ZeroshotCLIP)
    "OxfordFlowers" (any key of CUSTOM_TEMPLATES, any case) -> that dataset's template
    "ensemble7"               -> IMAGENET_TEMPLATES_SELECT (CoOp's ZeroshotCLIP2 on ImageNet)
    "imagenet80"              -> IMAGENET_TEMPLATES
    "ensemble7+OxfordFlowers" -> lists joined with "+" (ZeroshotCLIP2 on another dataset: 7 + 1)
    "path/to/templates.txt"   -> one template per line (blank lines and lines starting with # skipped)
"""
from pathlib import Path

__all__ = ["CUSTOM_TEMPLATES", "IMAGENET_TEMPLATES", "IMAGENET_TEMPLATES_SELECT", "get_templates"]

# CoOp's one template per dataset (trainers/zsclip.py).
CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}

# CLIP's 80 ImageNet templates, in CoOp's order (trainers/imagenet_templates.py). Tuples, so no caller
# can extend the shared list in place (CoOp's ZeroshotCLIP2 does, adding its template once per build).
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# The 7-template subset CoOp's ZeroshotCLIP2 ensembles ("itap" = "I took a picture").
IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

_NAMED = {
    "single": (CUSTOM_TEMPLATES["ImageNet"],),
    "ensemble7": IMAGENET_TEMPLATES_SELECT,
    "imagenet80": IMAGENET_TEMPLATES,
}
_DATASETS = {name.lower(): name for name in CUSTOM_TEMPLATES}


def _choices() -> str:
    return (
        f"one of {', '.join(_NAMED)}, a dataset name ({', '.join(CUSTOM_TEMPLATES)}), several joined with "
        f"'+' (e.g. 'ensemble7+OxfordFlowers'), or a text file with one template per line, each with one '{{}}'"
    )


def _read_file(path: Path) -> list[str]:
    templates = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise ValueError(f"{path} line {number}: {line!r} must contain exactly one '{{}}' for the class name")
        templates.append(line)
    if not templates:
        raise ValueError(f"{path} holds no templates: write one per line, each with one '{{}}' for the class name")
    return templates


def _one(part: str) -> list[str]:
    if part in _NAMED:
        return list(_NAMED[part])
    if part.lower() in _DATASETS:
        return [CUSTOM_TEMPLATES[_DATASETS[part.lower()]]]
    raise ValueError(f"unknown templates {part!r}: use {_choices()}")


def get_templates(spec: str) -> list[str]:
    """The template list named by `spec` (see the module docstring); always a new list."""
    path = Path(spec)
    if path.is_file():
        return _read_file(path)
    if not spec.strip():
        raise ValueError(f"empty templates: use {_choices()}")
    return [template for part in spec.split("+") for template in _one(part.strip())]
