"""`tinyprompt import-prompt` / `export-prompt`: prompts to and from the official repositories' files.

The layouts, and the repository file each comes from, are in `tinyprompt.methods.official_formats`:

    tinyprompt export-prompt --prompt runs/x/prompt.pt --format coop --out out/prompt_learner/model.pth.tar-50
    tinyprompt import-prompt --file model.pth.tar-50 --method coop --out prompt.pt [--n-ctx 16]
    tinyprompt export-prompt --prompt runs/ilm/prompt.pt --out results/best.pth --image-size 128   # ILM-VP, CNN
    tinyprompt import-prompt --file best.pth --method ilmvp --out prompt.pt --pad 30               # ILM-VP, CLIP
    tinyprompt export-prompt --prompt runs/x/prompt.pt --out prompt.safetensors                     # any method
What an official file does not hold (CoOp's class-token position and init words, TaI-DPT's test temperature)
is taken from a flag or is the official default, and the command prints which. ILM-VP's file holds its prompt's
mask, which the prompt flags of `tinyprompt train ilmvp` describe (--image-size or --pad, and --input-size): both
commands build the prompt from them and check it. `--format safetensors` (the default for an --out named
*.safetensors) writes tinyprompt's own prompt without pickle; every command that reads a prompt reads it.
"""
from pathlib import Path
from types import SimpleNamespace

import torch

from tinyprompt.commands.args import REQUIRED, int_at_least
from tinyprompt.data.largelabel import read_class_list
from tinyprompt.hub import load
from tinyprompt.methods import read_prompt_file, save_prompt
from tinyprompt.methods.ilmvp import AdditivePrompt, PaddingPrompt
from tinyprompt.methods.official_formats import FILE_LACKS, FORMATS, export_prompt, import_prompt
from tinyprompt.prompts import POSITIONS

__all__ = ["EXPORT", "IMPORT"]

SAFETENSORS = "safetensors"  # export-prompt's one non-official layout: the tinyprompt prompt itself, without pickle
# how to change a field import-prompt took from the official default
CHANGE = {"class_token_position": "pass --class-token-position if the run set another CLASS_TOKEN_POSITION",
          "ctx_init": "pass --ctx-init WORDS if the run set CTX_INIT (it matters when a word is several tokens)",
          "temperature_image": "NUS-WIDE used 4: load_prompt(clip, prompt, names, temperature_image=4.0)",
          "merge_rate": "load_prompt(clip, prompt, names, merge_rate=R) changes it"}  # fmt: skip
# where each official loader expects the file
WHERE = {"coop": "CoOp loads <model-dir>/prompt_learner/model.pth.tar-N with --model-dir <model-dir> --load-epoch N",
         "pomp": "ZSSeg reads it as MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT, Detic's dump_clip_features as --soft_prompt",
         "taidpt": "TaI-DPT loads <model-dir>/prompt_learner/model.pth.tar-N with --model-dir <model-dir> "
                   "--load-epoch N",
         "ilmvp": "ILM-VP's models/visual_prompt.py prompt loads ['visual_prompt_dict'] (load_state_dict) and "
                  "['mapping_sequence'] indexes the source logits (as experiments/predict.py does)"}
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def add_import_args(parser) -> None:
    parser.add_argument("--file", **REQUIRED, type=Path,
                        help="the official file: CoOp's or TaI-DPT's <output>/prompt_learner/model.pth.tar-N (or "
                        "model-best.pth.tar), a released POMP .pth.tar, ILM-VP's best.pth / ckpt.pth")  # fmt: skip
    parser.add_argument("--method", **REQUIRED, choices=FORMATS, help="the method (official repository) that saved it")
    parser.add_argument("--out", **REQUIRED, type=Path, help="the tinyprompt prompt file to write (for eval, "
                        "load_prompt): prompt.pt, or a *.safetensors name for safetensors (no pickle)")
    parser.add_argument("--n-ctx", type=int_at_least(1), default=None,
                        help="check that the file holds this many context vectors (None: no check)")
    parser.add_argument("--class-token-position", choices=POSITIONS, default=None,
                        help="coop/pomp: the run's CLASS_TOKEN_POSITION, not in the file (None: the official 'end')")
    parser.add_argument("--ctx-init", default=None,
                        help="coop/pomp: the run's CTX_INIT words, not in the file (None: the official '', random)")
    parser.add_argument("--classes", type=Path, default=None,
                        help="class file (one name per line): stored with the prompt; needed for class-specific "
                        "contexts (CSC), in the run's class order")  # fmt: skip
    parser.add_argument("--model", default=None,
                        help="check the context width against this CLIP, a model name or checkpoint (None: no check)")
    add_ilmvp_args(parser)


def run_import(args) -> int:
    given = {"n_ctx": args.n_ctx, "class_token_position": args.class_token_position, "ctx_init": args.ctx_init}
    given = {key: value for key, value in given.items() if value is not None}
    classnames = read_class_list(args.classes) if args.classes else None
    clip = load(args.model)[0] if args.model else None
    prompt = visual_prompt(args, args.method)
    state = import_prompt(args.file, args.method, clip_model=clip, classnames=classnames, visual_prompt=prompt, **given)
    save_prompt(state, args.out)
    print(f"{args.method} prompt from {args.file}: {_shapes(state)} -> {args.out}")
    for field in FILE_LACKS[args.method]:
        if field not in given:
            print(f"  {field} = {state['config'][field]!r}: not in the file, the official default; {CHANGE[field]}")
    if args.method == "ilmvp":
        print(f"  load it into the ILMVP model it was trained for: model.load_prompt_state_dict("
              f"tinyprompt.methods.read_prompt_file('{args.out}'))")
    return 0


def add_export_args(parser) -> None:
    parser.add_argument("--prompt", **REQUIRED, type=Path,
                        help="prompt.pt (or best.pt / checkpoint.pt, or a .safetensors prompt) written by `tinyprompt "
                        "train` (CoOp, POMP, TaI-DPT, ILM-VP; SHIP's prompt.pt is its CoOp prompt)")  # fmt: skip
    parser.add_argument("--format", choices=(*FORMATS, SAFETENSORS), default=None,
                        help="the official layout to write (coop and pomp take either prompt), or safetensors: this "
                        "prompt as it is, without pickle (None: safetensors for an --out named *.safetensors, else "
                        "the prompt's method)")  # fmt: skip
    parser.add_argument("--out", **REQUIRED, type=Path,
                        help="the file to write, e.g. <model-dir>/prompt_learner/model.pth.tar-50 for CoOp")
    parser.add_argument("--epoch", type=int_at_least(0), default=None,
                        help="the file's 'epoch' entry (None: N of a model.pth.tar-N name, else 0)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="float32: exact; float16: as the official fp16 releases (Detic on CUDA needs it) "
                        "(None: float32; safetensors keeps the prompt's own dtypes)")  # fmt: skip
    add_ilmvp_args(parser)


def run_export(args) -> int:
    state = read_prompt_file(args.prompt)
    format = args.format or (SAFETENSORS if args.out.suffix == ".safetensors" else state["method"])
    if format == SAFETENSORS:
        return _export_safetensors(args, state)
    if args.out.suffix == ".safetensors":
        raise ValueError(f"--out {args.out}: the official {format} code reads its file with torch.load, not "
                         f"safetensors: name it as the official code does, or pass --format safetensors")
    prompt = visual_prompt(args, format)
    if prompt is not None and "prompt" in state and tuple(state["prompt"].shape) != tuple(prompt.prompt.shape):
        raise ValueError(f"{args.prompt} holds a prompt of shape {tuple(state['prompt'].shape)}, but --input-size "
                         f"{args.input_size} makes {tuple(prompt.prompt.shape)}: pass the --input-size it was "
                         f"trained with")
    dtype = args.dtype or "float32"
    obj = export_prompt(state, args.out, format, epoch=args.epoch, dtype=DTYPES[dtype], visual_prompt=prompt)
    held = {**obj["visual_prompt_dict"], "mapping_sequence": obj["mapping_sequence"]} if format == "ilmvp" else \
        obj["state_dict"]
    print(f"{state['method']} prompt {args.prompt} -> {args.out}: {format} layout, {_shapes(held)}, epoch "
          f"{obj['epoch']}; {WHERE[format]}")
    lacks = {field: state["config"][field] for field in FILE_LACKS[format] if field in state["config"]}
    if lacks:
        settings = ", ".join(f"{field}={value!r}" for field, value in lacks.items())
        print(f"  the file does not hold {settings}: run the official code with the same settings")
    return 0


def _export_safetensors(args, state) -> int:
    """export-prompt --format safetensors: the prompt itself, as tinyprompt reads it (`read_prompt_file`)."""
    flags = [f"--{name.replace('_', '-')}" for name in ("epoch", "dtype", "image_size", "pad")
             if getattr(args, name) is not None]
    if flags:
        raise ValueError(f"{', '.join(flags)} describe an official file; --format safetensors writes the prompt as it "
                         f"is: leave them out")
    if args.out.suffix != ".safetensors":
        raise ValueError(f"--format safetensors writes a .safetensors file; --out {args.out} has another suffix: "
                         f"name it *.safetensors")
    save_prompt(state, args.out)
    print(f"{state['method']} prompt {args.prompt} -> {args.out}: safetensors, {_shapes(state)}, the other fields "
          f"as JSON metadata; tinyprompt reads it wherever it takes a prompt")
    return 0


def add_ilmvp_args(parser) -> None:
    """ILM-VP's prompt flags, as `tinyprompt train ilmvp` takes them: what its file's mask is made from."""
    parser.add_argument("--image-size", type=int_at_least(1), default=None,
                        help="ilmvp, CNN source: the --image-size it was trained with (the image the prompt frames)")
    parser.add_argument("--pad", type=int_at_least(1), default=None,
                        help="ilmvp, CLIP source: the --pad it was trained with (the width of the frame)")
    parser.add_argument("--input-size", type=int_at_least(1), default=224,
                        help="ilmvp: the prompt's side, the source's input (a CNN's --input-size, a CLIP's resolution)")


def visual_prompt(args, format: str):
    """The ILM-VP prompt module the flags describe (its mask goes into the file and is checked against it), or
    None for the other formats."""
    given = [f"--{flag}" for flag, value in (("image-size", args.image_size), ("pad", args.pad)) if value is not None]
    if format != "ilmvp":
        if given:
            raise ValueError(f"{' and '.join(given)} describe an ILM-VP prompt; a {format} file has none: leave "
                             f"{'them' if len(given) > 1 else 'it'} out")
        return None
    if len(given) != 1:
        raise ValueError(f"an ILM-VP file holds its prompt's mask: pass the one flag `tinyprompt train ilmvp` made it "
                         f"with, --image-size N (a CNN source) or --pad P (a CLIP source); got "
                         f"{' and '.join(given) or 'neither'}")
    if args.image_size is not None:
        return PaddingPrompt(args.image_size, args.input_size)
    return AdditivePrompt(args.input_size, args.pad)


def _shapes(tensors: dict) -> str:
    """'key (shape) dtype, ...' of the tensors in a dict, one level of nesting flattened (SHIP's encoder)."""
    flat = {}
    for key, value in tensors.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items() if torch.is_tensor(v)})
        elif torch.is_tensor(value):
            flat[key] = value
    return ", ".join(f"{key} {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for key, v in flat.items())


# the two subcommands, as cli.COMMANDS takes them: objects with add_args(parser) and run(args)
IMPORT = SimpleNamespace(add_args=add_import_args, run=run_import)
EXPORT = SimpleNamespace(add_args=add_export_args, run=run_export)
