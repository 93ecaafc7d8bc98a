"""CoOp: context optimisation, a learned prompt for a frozen CLIP.

Paper: "Learning to Prompt for Vision-Language Models", Zhou, Yang, Loy, Liu (IJCV 2022, arXiv 2109.01134).
Reference code: KaiyangZhou/CoOp `trainers/coop.py` (PromptLearner, TextEncoder, CustomCLIP).

The class-c prompt is [SOS][ctx_1..ctx_M][name_c][.][EOT] (or with the name in the middle / at the front,
see `tinyprompt.prompts`); the M context vectors live in the text encoder's input space and are the
only trained tensor. With f = encode_image(x) and t_c = encode_text(prompt_c),

    logits[b, c] = exp(logit_scale) · <f_b / |f_b|, t_c / |t_c|>,      loss = cross-entropy(logits, y)

and gradients flow through the whole frozen text encoder into ctx. CLIP stays in eval mode while
training (the official trainer switches only the prompt learner to train mode), so a ResNet's
BatchNorm keeps its running statistics.
"""
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinyprompt.methods.saved import SavedPrompt
from tinyprompt.prompts import POSITIONS, ClassPrompts, check_encoding, context_from_words, random_context

__all__ = ["CoOp", "CoOpConfig"]

LOSSES = ("cross_entropy", "sampled_softmax")
# config fields that only change how text is encoded, never the numbers: free to change when loading
ENCODING_FIELDS = ("text_chunk", "checkpoint", "share_prefix", "full_length", "loss")


@dataclass
class CoOpConfig:
    n_ctx: int = 16  # context vectors (CoOp's default); with ctx_init the word count wins (official quirk)
    ctx_init: str = ""  # "" = random N(0, init_std²) init; else init words, e.g. "a photo of a" (CoOp's "v1")
    csc: bool = False  # class-specific contexts (one set per class) instead of one shared set; not with ctx_init
    class_token_position: str = "end"  # "end" | "middle" | "front": where the class name sits in the prompt
    init_std: float = 0.02  # std of the random init (CoOp)
    loss: str = "cross_entropy"  # F.cross_entropy (official) | tinyprompt.kernels.sampled_softmax_loss (same numbers)
    text_chunk: int | str = 0  # prompts per text-encoder pass, sorted by length (less padding); 0 = one padded pass
    checkpoint: bool | str = False  # recompute each chunk's activations in backward: less memory, ~1/3 more text compute
    # encode SOS + the shared context once for all classes (exact, causal mask); "auto": on CPU only, where it saves
    # arithmetic, as a CUDA step is bound by launches and a prefix pass adds them (tinyprompt.prompts.AUTO_ENCODING)
    share_prefix: bool | str = "auto"
    full_length: bool = False  # run all 77 positions of every prompt, as the official code (for comparisons)

    def __post_init__(self):
        if not isinstance(self.n_ctx, int) or self.n_ctx < 1:
            raise ValueError(f"CoOpConfig.n_ctx = {self.n_ctx!r}: use an int >= 1")
        if self.class_token_position not in POSITIONS:
            raise ValueError(f"CoOpConfig.class_token_position = {self.class_token_position!r}: use one of {POSITIONS}")
        if self.csc and self.ctx_init:  # official quirk, reproduced: the words give one shared context
            warnings.warn("CoOpConfig: csc=True is ignored when ctx_init is given (one shared context from the words, as "
                          "the official code builds it); use ctx_init='' for class-specific contexts", stacklevel=3)
            self.csc = False  # what is learned, so a saved prompt says so and transfers like any shared context
        if self.init_std <= 0:
            raise ValueError(f"CoOpConfig.init_std = {self.init_std!r}: use a value > 0")
        if self.loss not in LOSSES:
            raise ValueError(f"CoOpConfig.loss = {self.loss!r}: use one of {LOSSES}")
        check_encoding(self)


class CoOp(SavedPrompt, nn.Module):
    """A frozen CLIP plus CoOp's learned context `ctx`: (n_ctx, width), or (n_cls, n_ctx, width) with csc."""

    CONFIG, OVERRIDABLE = CoOpConfig, ENCODING_FIELDS  # for from_prompt_state_dict

    def __init__(self, clip_model, classnames, config: CoOpConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else CoOpConfig()
        self.clip = clip_model.eval().requires_grad_(False)
        self.classnames = list(classnames)
        device = clip_model.token_embedding.weight.device
        if config.ctx_init:
            ctx, placeholder = context_from_words(clip_model, config.ctx_init)
        else:
            n_cls = len(self.classnames) if config.csc else None
            ctx, placeholder = random_context(config.n_ctx, clip_model.text_width, n_cls, config.init_std), None
        self.ctx = nn.Parameter(ctx.to(device))  # the only trainable tensor
        self.n_ctx = ctx.shape[-2]
        self.prompts = ClassPrompts(clip_model, self.classnames, self.n_ctx, placeholder, config.class_token_position,
                                    text_chunk=config.text_chunk, checkpoint=config.checkpoint,
                                    share_prefix=config.share_prefix, full_length=config.full_length)  # fmt: skip

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen backbone: BatchNorm keeps its running statistics, as the official trainer
        return self

    def text_features(self) -> torch.Tensor:
        """(n_cls, E) text features of the current prompts, unnormalised."""
        return self.prompts.encode(self.clip, self.ctx)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) images -> (B, n_cls) logits = exp(logit_scale) · cos(image, class prompt)."""
        return self.forward_features(self.clip.encode_image(images))

    def forward_features(self, image_features: torch.Tensor, text_features: torch.Tensor | None = None):
        """Logits (B, n_cls) from image features (B, E) (cached, or from encode_image); text features
        (n_cls, E) are computed from the prompts unless given (e.g. once for a whole evaluation)."""
        text = self.text_features() if text_features is None else text_features
        image = image_features / image_features.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return self.clip.logit_scale.exp() * image @ text.t()

    def loss(self, image_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the logits of image features (B, E) against labels (B,)."""
        if self.config.loss == "cross_entropy":
            return F.cross_entropy(self.forward_features(image_features), labels)
        from tinyprompt.kernels import sampled_softmax_loss  # the plain full softmax: every class visible to every row

        text = self.text_features()
        return sampled_softmax_loss(F.normalize(image_features, dim=-1), F.normalize(text, dim=-1), labels,
                                    self.clip.logit_scale.exp())  # fmt: skip

    # ---- saving: only the learned tensor plus what is needed to rebuild the prompt ----
    def prompt_state_dict(self) -> dict:
        return {"method": "coop", "config": asdict(self.config), "classnames": list(self.classnames),
                "ctx": self.ctx.detach().cpu().clone()}  # fmt: skip

    def load_prompt_state_dict(self, state: dict) -> None:
        """Load a saved prompt; a shared context works with any class list, class-specific ones need the same."""
        if state.get("method", "coop") != "coop":
            raise ValueError(f"this prompt was learned by {state['method']!r}, not CoOp: load it with that method")
        saved = state["config"]
        for key in ("ctx_init", "class_token_position", "csc"):
            if saved.get(key) != getattr(self.config, key):
                raise ValueError(f"the saved prompt has {key}={saved.get(key)!r}, this model {getattr(self.config, key)!r}: "
                                 f"build the model with the saved config (CoOp.from_prompt_state_dict)")
        ctx = state["ctx"]
        if self.config.csc and list(state.get("classnames", [])) != self.classnames:
            raise ValueError(f"the saved prompt has class-specific contexts for {len(state.get('classnames', []))} classes "
                             f"that differ from this model's {len(self.classnames)}: class-specific contexts only load "
                             f"with the same class list (a shared context, csc=False, transfers to any list)")
        if tuple(ctx.shape) != tuple(self.ctx.shape):
            raise ValueError(f"the saved ctx is {tuple(ctx.shape)}, this model's is {tuple(self.ctx.shape)} "
                             f"(n_ctx differs): build the model with the saved config (CoOp.from_prompt_state_dict)")
        with torch.no_grad():
            self.ctx.copy_(ctx)
