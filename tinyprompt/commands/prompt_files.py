"""`tinyprompt import-prompt` / `export-prompt`: prompts to and from the official repositories' files.

The layouts, and the repository file each comes from, are in `tinyprompt.methods.official_formats`:

    tinyprompt export-prompt --prompt runs/x/prompt.pt --format coop --out out/prompt_learner/model.pth.tar-50
    tinyprompt import-prompt --file model.pth.tar-50 --method coop --out prompt.pt [--n-ctx 16]
What an official file does not hold (CoOp's class-token position and init words, TaI-DPT's test temperature)
is taken from a flag or is the official default, and the command prints which. ILM-VP's files (prompt, mask
and label mapping) go through the Python API: they belong to a source model and a prompt module.
"""
from pathlib import Path
from types import SimpleNamespace

import torch

from tinyprompt.commands.args import REQUIRED, int_at_least
from tinyprompt.data.largelabel import read_class_list
from tinyprompt.hub import load
from tinyprompt.io import atomic_save
from tinyprompt.methods import read_prompt
from tinyprompt.methods.official_formats import FILE_LACKS, export_prompt, import_prompt
from tinyprompt.prompts import POSITIONS

__all__ = ["EXPORT", "IMPORT"]

FORMATS = ("coop", "pomp", "taidpt")  # the formats of prompts `tinyprompt eval` loads (ILM-VP: Python API)
# how to change a field import-prompt took from the official default
CHANGE = {"class_token_position": "pass --class-token-position if the run set another CLASS_TOKEN_POSITION",
          "ctx_init": "pass --ctx-init WORDS if the run set CTX_INIT (it matters when a word is several tokens)",
          "temperature_image": "NUS-WIDE used 4: load_prompt(clip, prompt, names, temperature_image=4.0)",
          "merge_rate": "load_prompt(clip, prompt, names, merge_rate=R) changes it"}  # fmt: skip
# where each official loader expects the file
WHERE = {"coop": "CoOp loads <model-dir>/prompt_learner/model.pth.tar-N with --model-dir <model-dir> --load-epoch N",
         "pomp": "ZSSeg reads it as MODEL.CLIP_ADAPTER.PROMPT_CHECKPOINT, Detic's dump_clip_features as --soft_prompt",
         "taidpt": "TaI-DPT loads <model-dir>/prompt_learner/model.pth.tar-N with --model-dir <model-dir> "
                   "--load-epoch N"}
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def add_import_args(parser) -> None:
    parser.add_argument("--file", **REQUIRED, type=Path,
                        help="the official file: CoOp's or TaI-DPT's <output>/prompt_learner/model.pth.tar-N (or "
                        "model-best.pth.tar), a released POMP .pth.tar")  # fmt: skip
    parser.add_argument("--method", **REQUIRED, choices=FORMATS, help="the method (official repository) that saved it")
    parser.add_argument("--out", **REQUIRED, type=Path, help="the tinyprompt prompt file to write (for eval, "
                        "load_prompt)")
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


def run_import(args) -> int:
    given = {"n_ctx": args.n_ctx, "class_token_position": args.class_token_position, "ctx_init": args.ctx_init}
    given = {key: value for key, value in given.items() if value is not None}
    classnames = read_class_list(args.classes) if args.classes else None
    clip = load(args.model)[0] if args.model else None
    state = import_prompt(args.file, args.method, clip_model=clip, classnames=classnames, **given)
    atomic_save(state, args.out)
    shapes = ", ".join(f"{key} {tuple(value.shape)}" for key, value in state.items() if torch.is_tensor(value))
    print(f"{args.method} prompt from {args.file}: {shapes} (float32) -> {args.out}")
    for field in FILE_LACKS[args.method]:
        if field not in given:
            print(f"  {field} = {state['config'][field]!r}: not in the file, the official default; {CHANGE[field]}")
    return 0


def add_export_args(parser) -> None:
    parser.add_argument("--prompt", **REQUIRED, type=Path,
                        help="prompt.pt (or best.pt / checkpoint.pt) written by `tinyprompt train` (CoOp, POMP, "
                        "TaI-DPT; SHIP's prompt.pt is its CoOp prompt)")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="the official layout to write; coop and pomp take either prompt (None: the prompt's)")
    parser.add_argument("--out", **REQUIRED, type=Path,
                        help="the file to write, e.g. <model-dir>/prompt_learner/model.pth.tar-50 for CoOp")
    parser.add_argument("--epoch", type=int_at_least(0), default=None,
                        help="the file's 'epoch' entry (None: N of a model.pth.tar-N name, else 0)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="float32: exact; float16: as the official fp16 releases (Detic on CUDA needs it)")


def run_export(args) -> int:
    state = read_prompt(args.prompt)
    format = args.format or state["method"]
    obj = export_prompt(state, args.out, format, epoch=args.epoch, dtype=DTYPES[args.dtype])
    shapes = ", ".join(f"{key} {tuple(value.shape)}" for key, value in obj["state_dict"].items())
    print(f"{state['method']} prompt {args.prompt} -> {args.out}: {format} layout, state_dict {shapes} "
          f"({args.dtype}), epoch {obj['epoch']}; {WHERE[format]}")
    lacks = {field: state["config"][field] for field in FILE_LACKS[format] if field in state["config"]}
    if lacks:
        settings = ", ".join(f"{field}={value!r}" for field, value in lacks.items())
        print(f"  the file does not hold {settings}: run the official code with the same settings")
    return 0


# the two subcommands, as cli.COMMANDS takes them: objects with add_args(parser) and run(args)
IMPORT = SimpleNamespace(add_args=add_import_args, run=run_import)
EXPORT = SimpleNamespace(add_args=add_export_args, run=run_export)
