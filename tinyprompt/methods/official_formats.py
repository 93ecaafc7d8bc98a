"""The official repositories' saved-prompt files, in and out: `import_prompt` reads one into a tinyprompt
prompt state (what `prompt_state_dict()` returns, for `load_prompt`), `export_prompt` writes one that the
official code loads. Each layout below was read from the official save and load code (repo: path):

- CoOp, "Learning to Prompt for Vision-Language Models" (arXiv 2109.01134). KaiyangZhou/Dassl.pytorch
  dassl/engine/trainer.py `save_model` + dassl/utils/torchtools.py `save_checkpoint` write
  <output>/prompt_learner/model.pth.tar-N (N = epoch + 1; model-best.pth.tar for the best validation) holding
  {"state_dict", "epoch", "optimizer", "scheduler", "val_result"} (older Dassl: no "val_result"; "optimizer" and
  "scheduler" are None when none was registered). "state_dict" is the PromptLearner's (KaiyangZhou/CoOp
  trainers/coop.py): `ctx` (n_ctx, width), or (n_cls, n_ctx, width) with CSC, plus the frozen buffers
  `token_prefix` / `token_suffix` (token embeddings of one class list), which CoOp's `load_model` deletes
  before `load_state_dict(strict=False)`. The dtype is CLIP's: float16 under the default TRAINER.COOP.PREC
  "fp16" (CoOp train.py), float32 under "fp32" / "amp". The file does not say CLASS_TOKEN_POSITION
  (default "end") nor CTX_INIT (default "": random init) - both change the prompt.
- POMP, "Prompt Pre-Training with Twenty-Thousand Classes" (arXiv 2304.04704). amazon-science/prompt-pretraining
  trainers/pomp.py `save_model` writes the same Dassl layout; its PromptLearner holds `ctx` plus the buffers
  `train_token_prefix/suffix` and `test_token_prefix/suffix`, which its `load_model` deletes (with CoOp's
  names). The released prompts (docs/MODELS.md: ...nctx4_cscFalse_ctpend... .pth.tar) are read by
  third_party/zsseg.baseline/mask_former/modeling/clip_adapter/__init__.py (`["state_dict"]`, the keys
  containing "ctx", into a parameter `ctx` (n_ctx, width)) and third_party/Detic/tools/dump_clip_features.py
  (`["state_dict"]["ctx"]`, n_ctx = ctx.size(0), the class name at the end). PREC defaults to "fp16" (train.py).
- TaI-DPT, "Texts as Images in Prompt Tuning for Multi-Label Image Recognition" (arXiv 2211.12739). guozix/TaI-DPT
  trainers/Caption_distill_double.py: the PromptLearner's `ctx` (global context) and `ctx_double` (local),
  the scalars `temperature` (init 3.0), `spatial_T` (3.0), `ranking_scale` (4.0) - unused, as every official
  config sets TRAIN.IF_LEARN_SCALE=False - and the buffers `token_prefix`, `token_suffix`, `token_suffix_nocls`.
  Its vendored Dassl (Dassl.pytorch-master/dassl/engine/trainer.py `save_model`) writes {"state_dict",
  "epoch", "optimizer", "scheduler"}; its `load_model` deletes token_prefix/suffix but not token_suffix_nocls
  (shaped by the class count: a file holding it loads only for the same number of classes).
  Only CLASS_TOKEN_POSITION "end" and a random init run there (the other branches never build `ctx_double`).
- ILM-VP, "Understanding and Improving Visual Prompting: A Label-Mapping Perspective" (arXiv 2211.11635).
  OPTML-Group/ILM-VP experiments/cnn/ilm_vp.py and experiments/clip/ilm_tp_vp.py save best.pth / ckpt.pth:
  {"visual_prompt_dict", "optimizer_dict", "epoch", "best_acc", "mapping_sequence"}. visual_prompt_dict is
  models/visual_prompt.py's `program` (3, S, S) float32 and its persistent buffer `mask` (3, S, S);
  mapping_sequence (T,) int64 is the source class of each target class (algorithms/flm_calculation.py).
- SHIP (arXiv 2307.07397): mrflogs/SHIP main_coop_vae.py and main_imagenet_coop_vae.py save neither the
  generator nor the CoOp context (utils.py saves only Tip-Adapter feature caches), so there is no official file.

Reading: official files are pickles, so they are loaded with torch.load(weights_only=True); a file that needs
more (Dassl's warm-up scheduler pickles its successor scheduler object) is refused with the one-line way to
keep its tensors. Writing: the official layout's key names and nesting, tensors on the CPU,
float32 by default (exact, and what PREC "fp32"/"amp" saves; the official loaders copy into their own dtype)
or float16 (the default PREC's releases; Detic's dump_clip_features concatenates ctx with CLIP's fp16
embeddings uncast, so it needs float16 on CUDA). The frozen token buffers are left out and the optimizer,
scheduler and score entries are None (as Dassl writes for a model without an optimizer): every official loader
above deletes or ignores them.
"""
import os
import re
from dataclasses import asdict, fields
from pathlib import Path

import torch

from tinyprompt.io import atomic_save
from tinyprompt.methods.coop import CoOpConfig
from tinyprompt.methods.ilmvp import ILMVPConfig
from tinyprompt.methods.pomp import POMPConfig
from tinyprompt.methods.taidpt import TaIDPTConfig

__all__ = ["FILE_LACKS", "FORMATS", "export_prompt", "import_prompt"]

FORMATS = ("coop", "pomp", "taidpt", "ilmvp")
# config fields that change the prompt but that a file does not hold: import takes them as given, else the
# config dataclass default, which is the official default (train.py / every official config)
FILE_LACKS = {"coop": ("class_token_position", "ctx_init"), "pomp": ("class_token_position", "ctx_init"),
              "taidpt": ("temperature_image", "merge_rate"), "ilmvp": ()}  # fmt: skip
CONFIGS = {"coop": CoOpConfig, "pomp": POMPConfig, "taidpt": TaIDPTConfig, "ilmvp": ILMVPConfig}
# a Dassl state_dict: the learned tensors a format reads, and the frozen buffers its official load_model drops
LEARNED = {"coop": ("ctx",), "pomp": ("ctx",),
           "taidpt": ("ctx", "ctx_double", "temperature", "spatial_T", "ranking_scale")}
FROZEN = {"coop": ("token_prefix", "token_suffix"),
          "pomp": ("token_prefix", "token_suffix", "train_token_prefix", "train_token_suffix", "test_token_prefix",
                   "test_token_suffix"),
          "taidpt": ("token_prefix", "token_suffix", "token_suffix_nocls")}  # fmt: skip
TAIDPT_SCALARS = {"temperature": 3.0, "spatial_T": 3.0, "ranking_scale": 4.0}  # official inits, never trained
# the top-level keys import reads, per format (what a file keeps when converted, see `_load`)
READS = {"coop": ("state_dict", "epoch"), "pomp": ("state_dict", "epoch"), "taidpt": ("state_dict", "epoch"),
         "ilmvp": ("visual_prompt_dict", "mapping_sequence", "epoch")}  # fmt: skip
NO_SHIP = ("SHIP's official code (mrflogs/SHIP main_coop_vae.py, main_imagenet_coop_vae.py) saves neither its "
           "generator nor its CoOp context, so there is no official SHIP file: keep the generator's "
           "prompt_state_dict(), and move the stage-2 prompt (method 'coop') with the 'coop' format")


def import_prompt(source, method: str, *, clip_model=None, classnames=None, visual_prompt=None, **config) -> dict:
    """A tinyprompt prompt state from an official file (a path, or the object torch.load gave you).

    method: one of FORMATS. clip_model: checks the context width against its text width. classnames: stored in
    the state; needed for CoOp's class-specific contexts (CSC), in the run's class order. visual_prompt (ILM-VP
    only, required): the PaddingPrompt / AdditivePrompt the prompt is for, whose mask must be the file's.
    config: the method's Config fields the file does not hold (FILE_LACKS; default: the official default);
    a field the file does hold (n_ctx, csc) is checked against it. Raises a one-line ValueError on a mismatch.
    """
    if method == "ship":
        raise ValueError(NO_SHIP)
    if method not in FORMATS:
        raise ValueError(f"method {method!r} has no official file format here; known: {FORMATS}")
    where = str(source) if isinstance(source, (str, os.PathLike)) else "the given checkpoint"
    obj = _load(source, READS[method])
    if isinstance(obj, dict) and ("method" in obj or isinstance(obj.get("prompt"), dict)):
        raise ValueError(f"{where} is already a tinyprompt prompt, not an official file: load it as it is "
                         f"(load_prompt, tinyprompt eval)")
    if method == "ilmvp":
        return _import_ilmvp(obj, where, classnames, visual_prompt, config)
    tensors = _dassl_tensors(obj, method, where)
    width = None if clip_model is None else clip_model.text_width
    if method == "taidpt":
        return _import_taidpt(tensors, where, width, classnames, config)
    return _import_coop(tensors, method, where, width, classnames, config)


def export_prompt(state: dict, path, format: str | None = None, *, epoch: int | None = None,
                  dtype: torch.dtype = torch.float32, visual_prompt=None) -> dict:  # fmt: skip
    """Write a prompt state (a `prompt_state_dict()`) as the official file `path`; returns what was written.

    format: one of FORMATS, default the state's method (a CoOp and a POMP prompt are the same tensor: either
    format takes either). epoch: the file's "epoch" (default: N of a Dassl name "model.pth.tar-N", else 0).
    dtype: float32 (exact) or float16 (the official fp16 releases) for the Dassl formats; ILM-VP saves float32.
    visual_prompt (ILM-VP only, required): the PaddingPrompt / AdditivePrompt whose mask the file must hold.
    """
    method = state.get("method")
    format = method if format is None else format
    if "ship" in (method, format):
        raise ValueError(NO_SHIP)
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {FORMATS}")
    takes = ("coop", "pomp") if format in ("coop", "pomp") else (format,)
    if method not in takes:
        raise ValueError(f"a {method!r} prompt cannot be written in the {format!r} format, which holds {takes} prompts")
    if dtype not in (torch.float32, torch.float16) or (format == "ilmvp" and dtype != torch.float32):
        allowed = "float32 (its scripts save the prompt as trained)" if format == "ilmvp" else "float32 or float16"
        raise ValueError(f"dtype {dtype} for the {format!r} format: use {allowed}")
    if epoch is None:
        number = re.fullmatch(r"model\.pth\.tar-(\d+)", Path(path).name)
        epoch = int(number[1]) if number else 0

    def cpu(tensor):  # a compact CPU copy (saving a view would save its whole storage)
        return tensor.detach().to("cpu", dtype, copy=True).contiguous()

    if format == "ilmvp":
        if visual_prompt is None or tuple(visual_prompt.mask.shape) != tuple(state["prompt"].shape):
            got = "none" if visual_prompt is None else f"mask {tuple(visual_prompt.mask.shape)}"
            raise ValueError(f"ILM-VP's file holds its prompt's mask (a persistent buffer the official prompt loads "
                             f"strictly): pass visual_prompt=the model's prompt, of shape "
                             f"{tuple(state['prompt'].shape)}; got {got}")
        prompt = {"program": cpu(state["prompt"]), "mask": cpu(visual_prompt.mask)}
        obj = {"visual_prompt_dict": prompt, "optimizer_dict": None, "epoch": epoch, "best_acc": None,
               "mapping_sequence": state["mapping"].detach().to("cpu", torch.int64, copy=True)}  # fmt: skip
    elif format == "taidpt":
        tensors = {"ctx": cpu(state["ctx_global"]), "ctx_double": cpu(state["ctx_local"])}
        tensors.update({name: torch.tensor(init, dtype=dtype) for name, init in TAIDPT_SCALARS.items()})
        obj = {"state_dict": tensors, "epoch": epoch, "optimizer": None, "scheduler": None}  # its Dassl: no val_result
    else:
        obj = {"state_dict": {"ctx": cpu(state["ctx"])}, "epoch": epoch, "optimizer": None, "scheduler": None,
               "val_result": None}  # fmt: skip
    atomic_save(obj, path)
    return obj


def _load(source, keep):
    """The object of an official file (weights only), or `source` itself when it is already loaded."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"official prompt file {path} does not exist (CoOp / TaI-DPT: "
                                f"<output>/prompt_learner/model.pth.tar-N; ILM-VP: <results>/best.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        objects = ", ".join(re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(e)))
        if not objects:  # not a torch file at all (truncated, another format): the first line of torch's reason
            detail = str(e).split("WeightsUnpickler error:")[-1]
            reason = next((line.strip() for line in detail.splitlines() if line.strip()), "")
            raise ValueError(f"{path} is not a file torch.load can read ({type(e).__name__}: {reason})") from None
        raise ValueError(
            f"{path} holds pickled Python objects besides tensors ({objects}; Dassl's warm-up scheduler saves its "
            f"successor scheduler), which tinyprompt does not unpickle, for safety (unpickling runs the file's code). "
            f"If you trust the file, keep its tensors once: python -c \"import torch; c = torch.load('{path}', "
            f"map_location='cpu', weights_only=False); torch.save({{k: c[k] for k in {keep!r} if k in c}}, "
            f"'{path}.tensors')\" and import {path}.tensors (or pass the loaded object to import_prompt)"
        ) from None


def _dassl_tensors(obj, method: str, where: str) -> dict:
    """The learned tensors of a Dassl checkpoint's state_dict, its frozen buffers dropped, anything else refused."""
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        got = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{where} is not a Dassl checkpoint (the layout the official {method} trainer saves): "
                         f"expected a dict with 'state_dict' and 'epoch', got {got}")
    tensors = {k: v for k, v in obj["state_dict"].items() if k not in FROZEN[method]}
    unknown = sorted(set(tensors) - set(LEARNED[method]))
    if unknown:
        raise ValueError(f"{where}: state_dict has {unknown[:8]} beside {LEARNED[method]}, so it is not a {method} "
                         f"prompt learner (another method's, e.g. CoCoOp's meta_net?): import it as the method that "
                         f"saved it")
    needed = LEARNED[method][:2] if method == "taidpt" else LEARNED[method]
    missing = [k for k in needed if not torch.is_tensor(tensors.get(k))]
    if missing:
        raise ValueError(f"{where}: state_dict has no tensor {missing}; a {method} prompt learner saves {needed}")
    return tensors


def _context(tensors: dict, key: str, where: str, width, dims) -> torch.Tensor:
    """state_dict[key] as a float32 CPU copy (float16 widens exactly), its shape checked."""
    ctx = tensors[key]
    shape = tuple(ctx.shape)
    if not ctx.is_floating_point() or ctx.dim() not in dims:
        kinds = "(n_ctx, width)" + (" or (n_cls, n_ctx, width)" if 3 in dims else "")
        csc = " (class-specific contexts, CSC=True: of these methods only CoOp learns them)" if ctx.dim() == 3 else ""
        raise ValueError(f"{where}: state_dict['{key}'] is {ctx.dtype} {shape}, expected floating {kinds}{csc}")
    if width is not None and shape[-1] != width:
        raise ValueError(f"{where}: state_dict['{key}'] is {shape}, width {shape[-1]}, but this CLIP's text width is "
                         f"{width}: import it for the CLIP it was trained with")
    return ctx.to("cpu", torch.float32, copy=True)


def _config(method: str, where: str, given: dict, file_says: dict) -> dict:
    """The method's config as a dict: the given fields (checked against what the file says) over the defaults."""
    cls = CONFIGS[method]
    unknown = sorted(set(given) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"{unknown} are not {cls.__name__} fields; it has {[f.name for f in fields(cls)]}")
    for key, value in file_says.items():
        if key in given and given[key] != value:
            raise ValueError(f"{where} holds {key}={value!r}, not the {key}={given[key]!r} asked: leave {key} out "
                             f"(it is read from the file) or import the file that has it")
    return asdict(cls(**{**given, **file_says}))


def _import_coop(tensors: dict, method: str, where: str, width, classnames, config: dict) -> dict:
    """CoOp's or POMP's PromptLearner: one context, shared or (CoOp's CSC) one per class."""
    ctx = _context(tensors, "ctx", where, width, (2, 3) if method == "coop" else (2,))
    file_says = {"n_ctx": ctx.shape[-2]}
    words = config.get("ctx_init", "").replace("_", " ")
    if words:  # the official n_ctx is the number of words: checked here, the config's n_ctx stays (CoOpConfig's rule)
        if len(words.split(" ")) != ctx.shape[-2] or ctx.dim() == 3:
            raise ValueError(f"{where}: state_dict['ctx'] is {tuple(ctx.shape)}, but ctx_init={config['ctx_init']!r} "
                             f"makes one shared context of {len(words.split(' '))}: pass the run's CTX_INIT")
        del file_says["n_ctx"]
    if method == "coop":
        file_says["csc"] = ctx.dim() == 3
        if ctx.dim() == 3 and len(classnames or []) != ctx.shape[0]:
            raise ValueError(f"{where}: state_dict['ctx'] holds class-specific contexts for {ctx.shape[0]} classes "
                             f"({tuple(ctx.shape)}); pass the run's {ctx.shape[0]} class names in its order, "
                             f"got {len(classnames or [])}")
    return {"method": method, "config": _config(method, where, config, file_says),
            "classnames": list(classnames or []), "ctx": ctx}


def _import_taidpt(tensors: dict, where: str, width, classnames, config: dict) -> dict:
    """TaI-DPT's PromptLearner: the global `ctx` and the local `ctx_double`; its unused scalars must be untouched."""
    ctx, local = (_context(tensors, key, where, width, (2,)) for key in ("ctx", "ctx_double"))
    if local.shape != ctx.shape:
        raise ValueError(f"{where}: state_dict['ctx'] is {tuple(ctx.shape)} but state_dict['ctx_double'] is "
                         f"{tuple(local.shape)}: TaI-DPT's two contexts have one shape; the file is damaged")
    for name, init in TAIDPT_SCALARS.items():
        if name in tensors and float(tensors[name]) != init:
            raise ValueError(f"{where}: state_dict['{name}'] is {float(tensors[name]):.6g}, not its initial "
                             f"{init}: the run learned its scales (TRAIN.IF_LEARN_SCALE), which tinyprompt's TaI-DPT "
                             f"does not model (a constant TaIDPTConfig.logit_scale)")
    return {"method": "taidpt", "config": _config("taidpt", where, config, {"n_ctx": ctx.shape[-2]}),
            "classnames": list(classnames or []), "ctx_global": ctx, "ctx_local": local}


def _import_ilmvp(obj, where: str, classnames, visual_prompt, config: dict) -> dict:
    if not (isinstance(obj, dict) and isinstance(obj.get("visual_prompt_dict"), dict) and "mapping_sequence" in obj):
        got = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{where} is not an ILM-VP checkpoint: expected 'visual_prompt_dict' and 'mapping_sequence' "
                         f"(experiments/*/ilm_vp.py best.pth), got {got}")
    saved, mapping = obj["visual_prompt_dict"], obj["mapping_sequence"]
    if sorted(saved) != ["mask", "program"] or not all(torch.is_tensor(v) for v in saved.values()):
        raise ValueError(f"{where}: visual_prompt_dict has {sorted(saved)}, expected ['mask', 'program'] (the "
                         f"official ExpansiveVisualPrompt / AdditiveVisualPrompt)")
    program, mask = saved["program"], saved["mask"]
    if visual_prompt is None:
        raise ValueError(f"{where}: ILM-VP's file holds its prompt's mask, which must be the model's: pass "
                         f"visual_prompt=the PaddingPrompt / AdditivePrompt of the ILMVP model it is for")
    if program.shape != visual_prompt.prompt.shape or mask.shape != program.shape:
        raise ValueError(f"{where}: program is {tuple(program.shape)} (mask {tuple(mask.shape)}), this prompt's is "
                         f"{tuple(visual_prompt.prompt.shape)}: build the prompt at the file's size")
    if not torch.equal(mask.float().cpu(), visual_prompt.mask.float().cpu()):
        raise ValueError(f"{where}: the file's mask lets {int(mask.count_nonzero())} of {mask.numel()} values learn, "
                         f"this prompt's {int(visual_prompt.mask.count_nonzero())}: build the prompt the file was "
                         f"trained with (the official CNN scripts pad an image into 224, the CLIP ones add a "
                         f"30-pixel frame)")
    if not torch.is_tensor(mapping) or mapping.dim() != 1 or mapping.is_floating_point() or \
            torch.unique(mapping).numel() != mapping.numel():
        got = f"{mapping.dtype} {tuple(mapping.shape)}" if torch.is_tensor(mapping) else type(mapping).__name__
        raise ValueError(f"{where}: mapping_sequence must be distinct source class indices (T,), got {got}")
    return {"method": "ilmvp", "config": _config("ilmvp", where, config, {}),
            "classnames": None if classnames is None else list(classnames),
            "prompt": program.to("cpu", torch.float32, copy=True), "mapping": mapping.to("cpu", torch.int64, copy=True)}
