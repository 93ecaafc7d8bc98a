"""What every command's arguments share: argparse value types that fail with a clear message, flags without
a default, the device choice, the model to load (--model, --model-config), and display names for class folders
(`--classes`)."""
import argparse
import json
import math
from pathlib import Path

import torch

from tinyprompt.data.largelabel import class_file_separator, read_class_names
from tinyprompt.hub import load

__all__ = ["REQUIRED", "int_at_least", "finite_float", "positive_float", "non_negative_float", "resolve_device",
           "class_names", "MODEL_CONFIG_HELP", "add_model_config_arg", "load_model"]

# add_argument(..., **REQUIRED): a flag with no default, so `--help` shows none ("(default: None)" would mislead)
REQUIRED = {"required": True, "default": argparse.SUPPRESS}


def int_at_least(low: int):
    """An argparse type: an int >= low, else an error naming the value and the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _float_where(ok=None, what: str = ""):
    """An argparse type: a finite float (float() also reads 'inf' and 'nan', which no flag means) where ok(value)."""
    number = f"a finite number {what}".rstrip()

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {number}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {number}, got {text!r}")
        if ok is not None and not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    parse.__name__ = number.removeprefix("a ")
    return parse


finite_float = _float_where()
positive_float = _float_where(lambda v: v > 0, "> 0")
non_negative_float = _float_where(lambda v: v >= 0, ">= 0")


def resolve_device(name: str) -> torch.device:
    """'auto' = cuda when available, else cpu; anything else must be a torch device that exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device ({e}): use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu (or auto)")
    return device


MODEL_CONFIG_HELP = ("for a --model checkpoint path that is not OpenAI's: its open_clip model config, as an "
                     "architecture or pretrained tag of `tinyprompt models --open-clip` (e.g. ViT-B-32 or "
                     "ViT-B-32/laion2b_s34b_b79k), open_clip's model-config .json file, or 'openai' (tensor shapes "
                     "cannot tell GELU from QuickGELU)")


def add_model_config_arg(group, flag: str = "--model") -> None:
    group.add_argument("--model-config", default=None, help=MODEL_CONFIG_HELP.replace("--model", flag))


def load_model(name_or_path, config, device):
    """(model, preprocess) of `tinyprompt.load`, with --model-config read: a .json file becomes its dict."""
    if config is not None and str(config).endswith(".json"):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"--model-config {path} does not exist: pass open_clip's model-config .json, or "
                                    f"an architecture name such as ViT-B-32")  # fmt: skip
        config = json.loads(path.read_text(encoding="utf-8"))
    return load(name_or_path, device=device, config=config)


def class_names(spec, folders: list[str], root) -> list[str]:
    """Display names for the sorted class folders from --classes (None: the folder names)."""
    if spec is None:
        return folders
    path = Path(spec)
    if not path.is_file():
        names = [name.strip() for name in spec.split(",")]
    else:
        text = path.read_text(encoding="utf-8")
        sep = class_file_separator(text)
        if sep is not None:  # "folder<TAB>name" or CoOp's "wnid name" lines: names by folder, in any order
            mapping = read_class_names(path, sep)
            missing = [folder for folder in folders if folder not in mapping]
            if missing:
                raise ValueError(f"--classes {path} has no name for the class folder(s) {missing[:5]} of {root}")
            return [mapping[folder] for folder in folders]
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != len(folders) or not all(names):
        more = ", ..." if len(folders) > 5 else ""
        raise ValueError(
            f"--classes gives {len(names)} names but {root} has {len(folders)} class folders "
            f"({', '.join(folders[:5])}{more}): give one non-empty name per folder, in sorted folder order"
        )
    return names
