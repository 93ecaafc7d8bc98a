"""Loading a saved prompt into a method: what every method's `from_prompt_state_dict` shares.

A method saves only its learned tensors plus its config and class names (`prompt_state_dict()`, with
`"method"` naming it). Rebuilding it for any class list is the same for every method: the saved config,
with only the fields that never change the numbers (how text is encoded) open to override, then the
learned tensors. A method class mixes in `SavedPrompt` and names its config class and those fields.
"""
from dataclasses import fields

__all__ = ["SavedPrompt"]


class SavedPrompt:
    """Mixin for a module built as `cls(clip_model, classnames, config)` with `load_prompt_state_dict(state)`.

    CONFIG: the method's config dataclass; OVERRIDABLE: its fields a loader may change (encoding knobs).
    """

    CONFIG: type
    OVERRIDABLE: tuple = ()

    @classmethod
    def from_prompt_state_dict(cls, clip_model, classnames, state: dict, **overrides):
        """The method over `classnames` (any list, unless its prompt is per class) holding a saved prompt;
        `overrides` may change only OVERRIDABLE config fields (e.g. text_chunk)."""
        bad = sorted(set(overrides) - set(cls.OVERRIDABLE))
        if bad:
            raise ValueError(f"only {cls.OVERRIDABLE} can be changed when loading a {cls.__name__} prompt, not {bad}")
        unknown = sorted(set(state["config"]) - {f.name for f in fields(cls.CONFIG)})
        if unknown:
            raise ValueError(f"the saved prompt's config has fields {unknown} this version of {cls.CONFIG.__name__} "
                             f"does not know")
        model = cls(clip_model, classnames, cls.CONFIG(**{**state["config"], **overrides}))
        model.load_prompt_state_dict(state)
        return model
