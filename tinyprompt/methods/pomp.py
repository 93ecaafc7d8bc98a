"""POMP: prompt pre-training over a label space of tens of thousands of classes.

Paper: "Prompt Pre-Training with Twenty-Thousand Classes for Open-Vocabulary Visual Recognition",
Ren et al. (NeurIPS 2023, arXiv 2304.04704). Reference code: amazon-science/prompt-pretraining
`trainers/pomp.py` (CustomCLIP.forward / negative_sampling, POMP.forward_backward).

The prompt is CoOp's (one shared context, the class name at the end; `tinyprompt.methods.coop`), so a
pre-trained POMP prompt transfers to any class list. What POMP changes is the training objective,
because encoding all N ~ 10-20K class prompts with gradients every step does not fit in memory:

- local contrast: each step draws K-1 negative classes uniformly without replacement from all N
  (the batch's own labels are not excluded), shared by every row of the batch;
- each row i scores its positive y_i and the K-1 negatives c_j; a negative equal to y_i is masked:
      z_i0 = s <x_i, t_{y_i}>,   z_ij = s <x_i, t_{c_j}> + m_i  (c_j != y_i),   loss_i = lse_j z_ij - z_i0
- local correction: the margin m_i on the negatives only, after the scale s. Paper: m = -ln((K-1)/(N-1));
  official code: log10(N-1) - log10(K-1-r_i), r_i = 1 when row i's label was drawn (MARGINS).

The official step encodes B + K - 1 prompts of 77 tokens (one positive per row, views and duplicate
labels included) and materialises the (B, K) logits (`official_loss`, `official_logits`). tinyprompt's
step (`POMP.step_loss`) computes the same loss and gradients with (i) each positive class encoded once
(autograd sums the duplicate rows), (ii) EOT truncation, a shared SOS+context prefix and
activation-checkpointed chunks of prompts (`tinyprompt.prompts.ClassPrompts`), and (iii) the fused
`tinyprompt.kernels.sampled_softmax_loss` (unique positives as private columns, negatives shared, the
collision column ignored).
Quirks fixed on purpose: a row whose only negative is its own label has loss 0 (official: NaN from
-log10(0)); negatives are seeded per step and per rank (official: only rank 0 is seeded at start).
"""
import hashlib
import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tinyprompt.kernels import sampled_softmax_loss
from tinyprompt.methods.coop import ENCODING_FIELDS, CoOp, CoOpConfig
from tinyprompt.methods.saved import SavedPrompt
from tinyprompt.prompts import POSITIONS

__all__ = ["POMP", "POMPConfig", "NegativeSampler", "SampledColumns", "sampled_columns", "margins", "pomp_loss",
           "view_rows", "official_loss", "official_logits", "coop_prompt_state", "MARGINS", "SAMPLERS"]

MARGINS = ("paper", "official", "ln_adjusted", "none")  # named margins; a number is a constant margin
SAMPLERS = ("per_step", "official")
OFFICIAL_MASK = 1e6  # the official code subtracts this from a masked logit (exp underflows to exactly 0 in fp32)


# ----------------------------------------------------------------------------- sampler
class NegativeSampler:
    """K-1 distinct negative classes out of N per step, uniform without replacement, shared by the batch.

    mode "per_step": step t on rank r draws from a generator seeded by (seed, t, r) (or (seed, t) when
      per_rank=False: every rank gets the same negatives), so a restart or another GPU count reproduces it.
    mode "official": the official draw, `torch.manual_seed(seed); torch.randperm(N)[:K-1]`, then one
      randperm per step from the same generator (as consecutive official forwards). Rank r > 0 uses its own
      seed derived from (seed, r) when per_rank (the official code leaves ranks >= 1 unseeded).
    """

    def __init__(self, n_cls: int, k: int, seed: int = 0, mode: str = "per_step", per_rank: bool = True):
        if mode not in SAMPLERS:
            raise ValueError(f"sampler mode {mode!r} is not one of {SAMPLERS}")
        if not 2 <= k <= n_cls + 1:
            raise ValueError(f"k = {k} logit columns need 2 <= k <= n_cls + 1 = {n_cls + 1} "
                             f"(k - 1 negatives out of {n_cls} classes; k = n_cls + 1 samples every class)")
        self.n_cls, self.k, self.seed, self.mode, self.per_rank = n_cls, k, seed, mode, per_rank
        self._generator, self._next = None, None  # official mode: the running generator and its next step

    def __call__(self, step: int = 0, rank: int = 0) -> torch.Tensor:
        """(K-1,) int64 class ids on the CPU for global step `step` on `rank`."""
        rank = rank if self.per_rank else 0
        if self.mode == "per_step":
            generator = torch.Generator().manual_seed(_mix(self.seed, step, rank))
            return torch.randperm(self.n_cls, generator=generator)[: self.k - 1]
        if self._next != (step, rank):  # first call, a resume, or another rank: replay from the start
            self._generator = torch.Generator().manual_seed(self.seed if rank == 0 else _mix(self.seed, rank))
            for _ in range(step):
                torch.randperm(self.n_cls, generator=self._generator)
        self._next = (step + 1, rank)
        return torch.randperm(self.n_cls, generator=self._generator)[: self.k - 1]


def _mix(*parts) -> int:
    """A 63-bit generator seed from integers (stable across runs and platforms)."""
    return int(hashlib.sha256(":".join(map(str, ("pomp",) + parts)).encode()).hexdigest()[:15], 16)


# ----------------------------------------------------------------------------- columns and margins
class SampledColumns(NamedTuple):
    """The text-encoder rows of one step and where each image row finds its columns among them."""
    classes: torch.Tensor  # (P + K-1,) class id of each text row: P positives, then the K-1 negatives
    n_pos: int  # P: unique labels (dedup) or one per image row
    target: torch.Tensor  # (B,) column of row i's positive, in [0, P)
    ignore: torch.Tensor  # (B,) column of the negative equal to y_i, or -1
    collisions: torch.Tensor  # (B,) r_i in {0, 1}: 1 when y_i was drawn as a negative


def sampled_columns(labels: torch.Tensor, neg_ids: torch.Tensor, dedup: bool = True) -> SampledColumns:
    """Columns of a step: labels (B,) and distinct negatives neg_ids (K-1,) on the same device."""
    if neg_ids.dim() != 1 or neg_ids.numel() == 0 or torch.unique(neg_ids).numel() != neg_ids.numel():
        raise ValueError(f"neg_ids must be K-1 >= 1 distinct class ids, got {neg_ids.tolist()[:10]}...")
    if dedup:
        positives, target = torch.unique(labels, return_inverse=True)  # (P,), (B,)
    else:  # the official layout: one positive row per image row
        positives, target = labels, torch.arange(labels.shape[0], device=labels.device)
    hit = labels[:, None] == neg_ids[None, :]  # (B, K-1), at most one True per row (distinct negatives)
    collisions = hit.sum(1)
    ignore = torch.where(collisions > 0, positives.shape[0] + hit.int().argmax(1), -1)
    return SampledColumns(torch.cat([positives, neg_ids]), positives.shape[0], target, ignore, collisions)


def view_rows(features: torch.Tensor, labels: torch.Tensor):
    """M views of B images as loss rows: features (B, M, E), labels (B,) -> (M·B, E), (M·B,), where row v·B + b is
    view v of image b (view-major, as the official parse_batch_train). One view, features (B, E), passes as is."""
    if features.dim() == 2:
        return features, labels
    views = features.shape[1]
    return features.transpose(0, 1).reshape(-1, features.shape[-1]), labels.repeat(views)


def margins(kind, n_cls: int, k: int, collisions: torch.Tensor) -> torch.Tensor:
    """(B,) fp32 margin m_i added to row i's negatives (after the scale), for kind in MARGINS or a number.

    paper:       ln((N-1)/(K-1)) = -ln((K-1)/(N-1)), one constant (the paper's local correction);
    official:    log10(N-1) - log10(K-1-r_i), base 10 and collision-adjusted (released checkpoints);
    ln_adjusted: ln(N-1) - ln(K-1-r_i); none: 0. A row with no visible negative (K-1-r_i = 0) gets 0.
    """
    visible = (k - 1 - collisions).double()  # negatives row i actually sees
    others = max(n_cls - 1, 1)  # N - 1 (N = 1: the only negative is every row's label, m is unused)
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        m = torch.full_like(visible, float(kind))
    elif kind == "paper":
        m = torch.full_like(visible, math.log(others) - math.log(k - 1))
    elif kind == "official":
        m = math.log10(others) - visible.clamp(min=1).log10()
    elif kind == "ln_adjusted":
        m = math.log(others) - visible.clamp(min=1).log()
    elif kind == "none":
        m = torch.zeros_like(visible)
    else:
        raise ValueError(f"margin {kind!r} is not one of {MARGINS} or a number")
    return torch.where(visible > 0, m, 0.0).float()


def pomp_loss(image_features: torch.Tensor, text_features: torch.Tensor, cols: SampledColumns, scale,
              margin: torch.Tensor) -> torch.Tensor:
    """Mean loss from unnormalised image features (B, E) and text features (P + K-1, E) of `cols.classes`.

    One fused pass (`sampled_softmax_loss`): positives are private columns [0, P), the negatives shared
    columns, the collision column ignored; the Triton path never materialises the (B, K) logits (its CPU
    reference twin does while they are small). Computed in fp32 (it is a small problem) whatever the autocast
    dtype the encoders ran in.
    """
    with torch.autocast(text_features.device.type, enabled=False):
        image = F.normalize(image_features.float(), dim=-1)
        text = F.normalize(text_features.float(), dim=-1)
        scale = scale.float() if isinstance(scale, torch.Tensor) else scale
        # the columns are valid by construction (sampled_columns): no data check, no device sync
        return sampled_softmax_loss(image, text, cols.target, scale, margin.to(text.device), shared_from=cols.n_pos,
                                    ignore=cols.ignore, check=False)  # fmt: skip


# ----------------------------------------------------------------------------- the official formulation
def official_logits(image: torch.Tensor, text_pos: torch.Tensor, text_neg: torch.Tensor, labels: torch.Tensor,
                    neg_ids: torch.Tensor, scale, margin: torch.Tensor) -> torch.Tensor:
    """The official (B, K) logits [positive, negatives...] from normalised features (the reference twin).

    image (B, E), text_pos (B, E) one positive row per image row, text_neg (K-1, E), margin (B,).
    Masked negatives hold s·cos - 1e6 + m_i, as the official code (its loss then equals a -inf mask).
    """
    pos = scale * (image * text_pos).sum(-1, keepdim=True)  # (B, 1): elementwise product + sum, as official
    neg = scale * image @ text_neg.t()  # (B, K-1)
    neg = neg - OFFICIAL_MASK * (labels[:, None] == neg_ids[None, :]).to(neg.dtype)
    return torch.cat([pos, neg + margin[:, None].to(neg.dtype)], dim=1)


def official_loss(model: "POMP", features, labels, neg_ids):
    """The official step's loss: B + K-1 prompts of 77 tokens, materialised logits, F.cross_entropy.

    features (B, E) unnormalised, one row per image row (views included, `view_rows`), labels (B,), neg_ids (K-1,);
    `model` built with full_length=True runs every prompt at all 77 positions, as the official code.
    """
    prompts = model.prompt.prompts
    label_upd = torch.cat([labels, neg_ids])  # (B + K-1,): positives first, one per image row
    text = model.clip.encode_text_embeddings(prompts.assemble(model.ctx, label_upd), prompts.eot_index[label_upd])
    text = F.normalize(text.float(), dim=-1)
    b = labels.shape[0]
    margin = margins("official", model.n_cls, neg_ids.numel() + 1, sampled_columns(labels, neg_ids).collisions)
    logits = official_logits(F.normalize(features, dim=-1), text[:b], text[b:], labels, neg_ids,
                             model.clip.logit_scale.exp(), margin.to(features.device))  # fmt: skip
    return F.cross_entropy(logits, torch.zeros_like(labels))


# ----------------------------------------------------------------------------- the method
@dataclass
class POMPConfig:
    n_ctx: int = 16  # context vectors (paper: 4 for 5 epochs or 16 for 20 epochs); ctx_init's word count wins
    ctx_init: str = ""  # "" = random N(0, init_std²) (official); else init words, e.g. "a photo of a"
    class_token_position: str = "end"  # "end" | "middle" | "front" (official: end)
    init_std: float = 0.02  # std of the random init (CoOp/POMP)
    k: int = 1000  # logit columns per row: the positive + k-1 sampled negatives (official UPDATE_CLASS_NUM)
    margin: str | float = "paper"  # one of MARGINS or a number; "official" reproduces the released prompts
    sampler: str = "per_step"  # "per_step" (seeded per step and rank) | "official" (one seeded generator)
    sampler_seed: int = 0  # seed of the negative draws
    per_rank_negatives: bool = True  # each DDP rank draws its own negatives (official); False: shared
    dedup: bool = True  # one text row and one column per unique positive class (same loss and gradients)
    # how the K prompts are encoded (the same function either way); "auto" picks by device, CPU: chunks of 256
    # checkpointed, the prefix shared; CUDA: one pass of all K, nothing recomputed, no prefix pass: no more kernel
    # launches than the official step (tinyprompt.prompts.AUTO_ENCODING)
    text_chunk: int | str = "auto"  # prompts per text-encoder pass (0 = all at once): bounds activation memory
    checkpoint: bool | str = "auto"  # recompute each chunk in backward: memory of one chunk, ~1/3 more text compute
    share_prefix: bool | str = "auto"  # encode SOS + the shared context once per chunk (exact, causal mask)
    full_length: bool = False  # run all 77 positions of every prompt, as the official code (comparisons)

    def __post_init__(self):
        if self.class_token_position not in POSITIONS:
            raise ValueError(f"POMPConfig.class_token_position = {self.class_token_position!r}: use one of {POSITIONS}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 2:
            raise ValueError(f"POMPConfig.k = {self.k!r}: use an int >= 2 (the positive plus k-1 >= 1 negatives)")
        number = isinstance(self.margin, (int, float)) and not isinstance(self.margin, bool)
        if not (number and math.isfinite(self.margin)) and self.margin not in MARGINS:
            raise ValueError(f"POMPConfig.margin = {self.margin!r}: use one of {MARGINS} or a finite number")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"POMPConfig.sampler = {self.sampler!r}: use one of {SAMPLERS}")
        if not isinstance(self.sampler_seed, int) or self.sampler_seed < 0:
            raise ValueError(f"POMPConfig.sampler_seed = {self.sampler_seed!r}: use an int >= 0")
        self.coop_config()  # n_ctx, init_std and the encoding knobs are checked by CoOpConfig

    def coop_config(self) -> CoOpConfig:
        """The CoOp prompt this config learns (a shared context: POMP has no class-specific contexts)."""
        return CoOpConfig(**{f.name: getattr(self, f.name) for f in fields(CoOpConfig) if hasattr(self, f.name)})


# config fields that only change how text is encoded, never the numbers: free to change when loading
ENCODING = tuple(name for name in ENCODING_FIELDS if name in {f.name for f in fields(POMPConfig)})


class POMP(SavedPrompt, nn.Module):
    """A frozen CLIP plus a CoOp prompt (`self.prompt`, whose `ctx` is the only trained tensor) over
    `classnames`, trained with POMP's sampled-negative loss (`loss`)."""

    CONFIG, OVERRIDABLE = POMPConfig, ENCODING  # for from_prompt_state_dict

    def __init__(self, clip_model, classnames, config: POMPConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else POMPConfig()
        self.prompt = CoOp(clip_model, classnames, config.coop_config())
        self.n_cls = len(self.prompt.classnames)
        # the sampler is built on first use, so a pre-trained prompt also loads for a few evaluation classes
        self._sampler = None

    @property
    def clip(self):
        return self.prompt.clip

    @property
    def ctx(self) -> nn.Parameter:
        return self.prompt.ctx

    @property
    def classnames(self) -> list:
        return self.prompt.classnames

    # ---- inference: exactly CoOp's (all classes, shared context) ----
    def text_features(self) -> torch.Tensor:
        """(n_cls, E) unnormalised text features of every class prompt."""
        return self.prompt.text_features()

    def forward_features(self, image_features, text_features=None) -> torch.Tensor:
        return self.prompt.forward_features(image_features, text_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.prompt(images)

    # ---- training ----
    def negatives(self, step: int = 0, rank: int = 0) -> torch.Tensor:
        """(K-1,) negative class ids of global step `step` on `rank`, on the model's device."""
        if self._sampler is None:
            c = self.config
            self._sampler = NegativeSampler(self.n_cls, c.k, c.sampler_seed, c.sampler, c.per_rank_negatives)
        return self._sampler(step, rank).to(self.ctx.device)

    def loss(self, image_features: torch.Tensor, labels: torch.Tensor, neg_ids: torch.Tensor) -> torch.Tensor:
        """Mean POMP loss of image features (B, E) with labels (B,) against the negatives neg_ids (K-1,)."""
        cols = sampled_columns(labels, neg_ids, self.config.dedup)
        text = self.prompt.prompts.encode(self.clip, self.ctx, cols.classes)  # (P + K-1, E): duplicates encoded once
        margin = margins(self.config.margin, self.n_cls, neg_ids.numel() + 1, cols.collisions)
        return pomp_loss(image_features, text, cols, self.clip.logit_scale.exp(), margin)

    def step_loss(self, features: torch.Tensor, labels: torch.Tensor, step: int = 0, rank: int = 0) -> torch.Tensor:
        """The training step's loss, mean_i [logsumexp_j z_ij - z_i0] (module docstring): features (B, M, E) of
        M views of B images (or (B, E), one view) with labels (B,), against the K-1 negatives of global step `step`
        on `rank` (`negatives`), shared by every row. With margin "official", `official_loss` up to rounding."""
        # the draw is host-side (a hashed seed, a CPU generator): a compiled step runs it as is, never traced (the
        # wrapper is made only then, as torch.compiler.disable imports dynamo)
        draw = torch.compiler.disable(self.negatives) if torch.compiler.is_compiling() else self.negatives
        return self.loss(*view_rows(features, labels), draw(step, rank))

    # ---- saving: the learned context plus what rebuilds the prompt ----
    def prompt_state_dict(self) -> dict:
        return {"method": "pomp", "config": asdict(self.config), "classnames": list(self.classnames),
                "ctx": self.ctx.detach().cpu().clone()}  # fmt: skip

    def load_prompt_state_dict(self, state: dict) -> None:
        if state.get("method") != "pomp":
            raise ValueError(f"this prompt was learned by {state.get('method')!r}, not POMP: load it with that method")
        self.prompt.load_prompt_state_dict(coop_prompt_state(state))  # checks n_ctx, init and position


def coop_prompt_state(state: dict) -> dict:
    """A saved POMP prompt as a CoOp prompt: `CoOp.from_prompt_state_dict(clip, classnames, ...)` then
    starts from the pre-trained context (e.g. to fine-tune it on a downstream few-shot dataset)."""
    if state.get("method") != "pomp":
        raise ValueError(f"expected a POMP prompt (method 'pomp'), got method {state.get('method')!r}")
    config = POMPConfig(**state["config"]).coop_config()
    prompt = {key: getattr(config, key) for key in ("n_ctx", "ctx_init", "csc", "class_token_position", "init_std")}
    return {"method": "coop", "config": prompt, "classnames": list(state.get("classnames", [])), "ctx": state["ctx"]}
