"""`tinyprompt train <method> ...`: run a method's training recipe (one sub-command per method).

Each recipe is a module in `tinyprompt/commands/recipes/` with `add_args(parser)` and `run(args)`; its first
docstring line is the sub-command's help. `tinyprompt train coop --help` lists every flag with its
default. Multi-process: `torchrun --nproc_per_node N -m tinyprompt train coop ...`.
An --out that already holds a run is refused unless --resume continues it or --overwrite replaces it.
"""
import argparse

from tinyprompt.commands.recipes import coop, ilmvp, pomp, ship, taidpt

# method: recipe module
RECIPES = {"coop": coop, "ilmvp": ilmvp, "taidpt": taidpt, "pomp": pomp, "ship": ship}


def add_args(parser) -> None:
    sub = parser.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name, recipe in RECIPES.items():
        help_ = recipe.__doc__.strip().splitlines()[0]
        p = sub.add_parser(name, help=help_, description=recipe.__doc__,
                           formatter_class=_Formatter)  # fmt: skip
        p.set_defaults(recipe=recipe)
        recipe.add_args(p)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag defaults in the help, and the recipe's docstring kept as written."""


def run(args) -> int:
    return args.recipe.run(args)
