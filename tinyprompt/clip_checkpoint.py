"""A CLIP checkpoint (a state dict of OpenAI's module tree) as a model: `build_model(state_dict, config=None)`.

Paper: "Learning Transferable Visual Models From Natural Language Supervision", Radford et al. 2021
(arXiv 2103.00020). Like OpenAI's `build_model` (openai/CLIP `clip/model.py` @ d05afc4), every size is read from
the tensor shapes, so any checkpoint loads without a config; unlike it, the weights stay fp32 (OpenAI's loader rounds
them to fp16) and the load is strict, with errors that name the key. open_clip (github.com/mlfoundations/open_clip)
trains the same towers under the same key names, but most of its models use the erf GELU and some wider attention
heads, which no tensor shape shows: `config`, open_clip's model config, says them (`CLIPConfig.from_open_clip`);
without one OpenAI's are assumed, silently only for OpenAI's released archives.
"""
import warnings
from dataclasses import asdict

import torch

from tinyprompt.clip import CLIP
from tinyprompt.clip_config import OPENAI_MODELS, CLIPConfig

__all__ = ["build_model", "infer_config", "strip_ddp_prefix"]

_ARCHIVE_SCALARS = ("input_resolution", "context_length", "vocab_size")  # OpenAI archives' non-weight buffers


def _not_clip(what: str) -> ValueError:
    return ValueError(f"{what}: this is not an OpenAI-format CLIP checkpoint (state dict of openai/CLIP's model)")


def strip_ddp_prefix(state_dict):
    """A training checkpoint's weights without DistributedDataParallel's prefix: DDP keeps the model as its
    `.module`, so every key of a state dict saved from the wrapper starts with "module."; other dicts unchanged."""
    if state_dict and all(isinstance(k, str) and k.startswith("module.") for k in state_dict):
        return {k.removeprefix("module."): v for k, v in state_dict.items()}
    return state_dict


def infer_config(state_dict, config=None) -> CLIPConfig:
    """The architecture of an OpenAI-format state dict: sizes from tensor shapes alone (OpenAI's build_model rules,
    MLP widths too); activation and head widths from `config`, open_clip's model config (checked against the
    shapes), else OpenAI's (QuickGELU, 64-wide heads). See `build_model`."""
    # read the config first: an option it sets that is not implemented is named before any missing key
    given = None if config is None or config == "openai" else CLIPConfig.from_open_clip(config)
    sizes = _shape_sizes(state_dict)
    if given is None:  # what shapes cannot show, OpenAI's: QuickGELU, 64-wide heads (at least one, for a narrow text)
        try:
            return CLIPConfig(**sizes, transformer_heads=max(1, sizes["transformer_width"] // 64))
        except ValueError as err:
            raise _not_clip(f"the shapes give an invalid architecture ({err})") from err
    differ = [f"{name} {getattr(given, name)} (config) vs {value} (shapes)" for name, value in sizes.items()
              if getattr(given, name) != value]  # fmt: skip
    if differ:
        raise ValueError(f"the open_clip config does not describe this state dict: {', '.join(differ)}; "
                         f"pass the config of the model the checkpoint was trained as")  # fmt: skip
    return given  # its heads, head widths and activation; its sizes are the shapes'


def _shape_sizes(state_dict) -> dict:
    """Every size the tensor shapes show (OpenAI's build_model rules, and the MLP widths), by CLIPConfig field: all
    fields but the layout no shape shows (transformer_heads, vision_head_width, quick_gelu)."""
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) for k in state_dict):
        raise _not_clip(f"expected a dict of str -> tensor, got {type(state_dict).__name__}")

    def shape(key, ndim):
        if key not in state_dict:
            found = ", ".join(list(state_dict)[:5]) or "none"
            raise _not_clip(f"missing key {key!r} (first keys found: {found})")
        value = state_dict[key]
        if not isinstance(value, torch.Tensor) or value.ndim != ndim:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise _not_clip(f"key {key!r} should be a {ndim}-d tensor, got {got}")
        return tuple(value.shape)

    vision_mlp_width = None
    if "visual.proj" in state_dict:  # ViT
        vision_width, _, _, vision_patch_size = shape("visual.conv1.weight", 4)
        vision_layers = len([k for k in state_dict if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        grid = round((shape("visual.positional_embedding", 2)[0] - 1) ** 0.5)
        image_resolution = vision_patch_size * grid
        vision_mlp_width = shape("visual.transformer.resblocks.0.mlp.c_fc.weight", 2)[0]
    else:  # ModifiedResNet
        vision_layers = tuple(
            len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{b}")}) for b in (1, 2, 3, 4)
        )
        vision_width, vision_patch_size = shape("visual.layer1.0.conv1.weight", 4)[0], None
        tokens = shape("visual.attnpool.positional_embedding", 2)[0]
        grid = round((tokens - 1) ** 0.5)
        if grid**2 + 1 != tokens:
            raise _not_clip(f"visual.attnpool.positional_embedding has {tokens} rows, not a square grid + 1")
        image_resolution = grid * 32
    return dict(
        embed_dim=shape("text_projection", 2)[1],
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=vision_patch_size,
        context_length=shape("positional_embedding", 2)[0],
        vocab_size=shape("token_embedding.weight", 2)[0],
        transformer_width=shape("ln_final.weight", 1)[0],
        transformer_layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks")}),
        vision_mlp_width=vision_mlp_width,
        text_mlp_width=shape("transformer.resblocks.0.mlp.c_fc.weight", 2)[0],
    )


def build_model(state_dict, config=None) -> CLIP:
    """A CLIP from an OpenAI-format state dict: architecture from shapes, fp32 weights, strict load, eval mode.

    Shapes give every size but not the activation nor the attention head width. `config` says them:
    - None: OpenAI's (QuickGELU, 64-wide heads), silently only for a released OpenAI archive (one of the nine
      architectures with the archive's scalar buffers); else with a warning, because open_clip trains the same
      shapes with other values (its LAION ViT-B-32 uses the erf GELU: ~1% off with QuickGELU);
    - "openai": OpenAI's, no warning (a checkpoint of OpenAI's or tinyprompt's CLIP);
    - open_clip's model config dict (`open_clip.get_model_config(name)`; the "-quickgelu" twin, or quick_gelu=True,
      for weights trained with QuickGELU, as open_clip's pretrained tags say): its values, its sizes checked
      against the shapes; an option tinyprompt.clip does not implement raises a ValueError naming it.
    DistributedDataParallel's "module." prefix is stripped (`strip_ddp_prefix`). The scalar keys of TorchScript
    archives (input_resolution, context_length, vocab_size) are ignored; every floating tensor is copied as fp32
    (released files store fp16; nothing is rounded). The model lives on the state dict's device (the meta device
    works too, for shape checks).
    """
    state_dict = strip_ddp_prefix(state_dict)
    archive = isinstance(state_dict, dict) and all(k in state_dict for k in _ARCHIVE_SCALARS)
    if isinstance(state_dict, dict):
        state_dict = {k: v for k, v in state_dict.items() if k not in _ARCHIVE_SCALARS}
    arch = infer_config(state_dict, config)
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise _not_clip("some values are not tensors")
    with torch.device("meta"):  # no allocation or random init: every tensor comes from the state dict
        model = CLIP(**asdict(arch))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = [f"{kind} key {keys[0]!r}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")
                for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]  # fmt: skip
    if problems:
        raise _not_clip(f"{'; '.join(problems)} for the inferred architecture {arch}")
    for key, ref in expected.items():
        if state_dict[key].shape != ref.shape:
            got = tuple(state_dict[key].shape)
            raise _not_clip(f"key {key!r} has shape {got}, expected {tuple(ref.shape)} for {arch}")
    # one fresh fp32 copy per tensor (never aliasing the caller's dict), assigned in place of the meta ones
    fresh = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone() for k, v in state_dict.items()}
    model.load_state_dict(fresh, strict=True, assign=True)
    if config is None and not (archive and arch in OPENAI_MODELS.values()):
        warnings.warn(
            "build_model: not a released OpenAI checkpoint, and tensor shapes show neither the activation (GELU or "
            "QuickGELU) nor the attention head width: OpenAI's are assumed (QuickGELU, 64). Pass config=open_clip's "
            "model config (open_clip.get_model_config(name)) for an open_clip checkpoint, or config='openai' for "
            "one made by OpenAI's or tinyprompt's CLIP code", stacklevel=2,
        )  # fmt: skip
    return model.eval()
