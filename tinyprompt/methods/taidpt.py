"""TaI-DPT: texts as images, double-grained prompts, for multi-label recognition without images.

Paper: "Texts as Images in Prompt Tuning for Multi-Label Image Recognition", Guo, Dong, Li, Xu, Wang,
Zuo (CVPR 2023, arXiv 2211.12739). Reference code: guozix/TaI-DPT `trainers/Caption_distill_double.py`.

Two shared contexts are learned over the same class prompts ([SOS][ctx][name][.][EOT], CoOp's
prompt): a global one giving class embeddings t^g_c, a local one giving t^l_c. Training sees only
captions: CLIP aligns texts and images, so a caption's EOT feature stands in for an image's global
feature and its token features for the spatial (dense) features. With cos the plain cosine,

    global:  g[b, c]   = 4 · cos(f_b, t^g_c)
    local:   s[b, l, c] = cos(x_{b,l}, t^l_c),  p = softmax_l(T · s[b, :, c]),  loc[b, c] = Σ_l 4 · s · p
    loss  = ranking(g, y) + ranking(loc, y)     (hinge over positive/negative pairs, margin 1, summed
                                                  over pairs, mean over the batch)

The logit scale is the constant 4 (the official configs never learn it); T = 50 on captions and 40 on
images (4 for NUS-WIDE). Caption padding is left out of the softmax; SOT, EOT and word tokens stay in.
At test time f_b is CLIP's attention pool WITHOUT its positional embedding, the locations x_{b,l} are
c_proj(v_proj(·)) of the last feature map (ViT: ln_post(patch tokens) @ proj, which the official code
lacks), and score = 0.5 · g + 0.5 · loc.

Speed (exact): caption features depend on nothing learned, so the corpus is encoded once
(`encode_captions`, EOT-truncated, packed without padding) and every step only encodes the 2·C class
prompts (the training step, `TaIDPT.caption_loss`); the official code re-encodes every caption at all
77 positions every step (`official_loss`, its reference twin). Quirk not kept: the official mask is
`token id == 0`, which also hides the "!" token (id 0) inside captions; here exactly the positions
after EOT are masked.
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinyprompt.kernels import ranking_loss
from tinyprompt.methods.saved import SavedPrompt
from tinyprompt.prompts import ClassPrompts, check_encoding, random_context

__all__ = [
    "TaIDPT",
    "TaIDPTConfig",
    "CaptionFeatures",
    "encode_captions",
    "image_features",
    "global_logits",
    "local_logits",
    "fuse_scores",
    "official_logits",
    "official_ranking_loss",
    "official_loss",
]

# config fields that only change how prompts are encoded, never the numbers: free to change when loading
ENCODING_FIELDS = ("text_chunk", "checkpoint", "share_prefix")


@dataclass
class TaIDPTConfig:
    n_ctx: int = 16  # context vectors per branch (official configs: 16)
    init_std: float = 0.02  # std of the N(0, std²) init of both contexts (official)
    logit_scale: float = 4.0  # constant logit scale of both branches (TRAIN.IF_LEARN_SCALE=False)
    temperature_text: float = 50.0  # softmax temperature over caption tokens (training)
    temperature_image: float = 40.0  # softmax temperature over image locations: 40 VOC/COCO, 4 NUS-WIDE
    merge_rate: float = 0.5  # test score = merge_rate · global + (1 - merge_rate) · local
    margin: float = 1.0  # hinge margin of the ranking loss (official training call)
    text_chunk: int | str = 0  # class prompts per text-encoder pass (0 = all at once)
    checkpoint: bool | str = False  # recompute prompt-encoder activations in backward: less memory
    share_prefix: bool | str = "auto"  # SOS + the shared context encoded once (exact); "auto": on CPU only, as CoOp

    def __post_init__(self):
        if not isinstance(self.n_ctx, int) or self.n_ctx < 1:
            raise ValueError(f"TaIDPTConfig.n_ctx = {self.n_ctx!r}: use an int >= 1")
        for name in ("init_std", "logit_scale", "temperature_text", "temperature_image"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TaIDPTConfig.{name} = {getattr(self, name)!r}: use a value > 0")
        if not 0.0 <= self.merge_rate <= 1.0:
            raise ValueError(f"TaIDPTConfig.merge_rate = {self.merge_rate!r}: use a value in [0, 1]")
        if self.margin < 0:
            raise ValueError(f"TaIDPTConfig.margin = {self.margin!r}: use a value >= 0")
        check_encoding(self)


def global_logits(feats: torch.Tensor, class_emb: torch.Tensor, logit_scale: float = 4.0) -> torch.Tensor:
    """(B, E) features, (C, E) class embeddings -> (B, C) = logit_scale · cos."""
    return logit_scale * F.normalize(feats, dim=-1, eps=0.0) @ F.normalize(class_emb, dim=-1, eps=0.0).t()


def local_logits(local_feats, class_emb, temperature: float, mask=None, logit_scale: float = 4.0):
    """Local (B, C) logits: Σ_l scale · s · softmax_l(T · s), s = cos(local_feats (B, L, E), class_emb (C, E)).

    mask (B, L) bool marks locations to leave out (caption padding): they get weight exactly 0, as the
    official additive -10000 does (exp underflows to 0 in fp32).
    """
    feats = F.normalize(local_feats, dim=-1, eps=0.0)  # plain L2 norms, as the official code
    cos = feats @ F.normalize(class_emb, dim=-1, eps=0.0).t()  # (B, L, C)
    weights = temperature * cos
    if mask is not None:
        weights = weights.masked_fill(mask[..., None], float("-inf"))
    weights = weights.softmax(dim=1)  # over locations, per class
    return logit_scale * (cos * weights).sum(dim=1)  # (B, C)


def fuse_scores(scores: torch.Tensor, other: torch.Tensor, weight: float = 0.1) -> torch.Tensor:
    """weight · minmax(scores) + (1 - weight) · minmax(other), min-max over the images of each class.

    The paper adds TaI-DPT to an image-trained (partial-label) method this way, with weight 0.1 on
    TaI-DPT; both score matrices are (N, C) over the same images and classes.
    """
    if scores.shape != other.shape or scores.dim() != 2:
        raise ValueError(f"fuse_scores needs two (N, C) score matrices, got {tuple(scores.shape)} and {tuple(other.shape)}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fuse_scores weight = {weight!r}: use a value in [0, 1]")

    def minmax(x):
        low, high = x.min(dim=0, keepdim=True).values, x.max(dim=0, keepdim=True).values
        return (x - low) / (high - low).clamp(min=torch.finfo(x.dtype).tiny)

    return weight * minmax(scores.float()) + (1 - weight) * minmax(other.float())


def image_features(clip, images: torch.Tensor):
    """TaI-DPT's (global (B, E), local (B, HW, E)) image features: a ResNet's attention pool WITHOUT its
    positional embedding (so any resolution works) and c_proj(v_proj(x_l)) per location; a ViT's class
    token and its projected patch tokens."""
    resnet = hasattr(clip.visual, "attnpool")  # a ViT's positional embedding is not optional
    return clip.encode_image_dense(images, positional_embedding=not resnet)


@dataclass
class CaptionFeatures:
    """Frozen-encoder features of a caption corpus: EOT features, and token features packed without padding."""

    global_feats: torch.Tensor  # (N, E) feature at each caption's EOT (= CLIP encode_text)
    token_feats: torch.Tensor  # (T, E) positions 0..EOT of every distinct caption, concatenated
    lengths: torch.Tensor  # (N,) EOT index + 1
    offsets: torch.Tensor  # (N,) where caption n starts in token_feats (repeated captions share one run)

    def __post_init__(self):
        # the corpus's longest caption, read once: a compiled step pads every batch to it (a static shape; padding is
        # masked out, so the same logits) instead of reading the batch's longest back from the device
        self.longest = int(self.lengths.max()) if len(self.lengths) else 0

    def __len__(self) -> int:
        return self.global_feats.shape[0]

    def batch(self, idx: torch.Tensor):
        """(global (B, E), local (B, L, E), padding mask (B, L)) of captions idx; L = their longest (compiled: the
        corpus's longest)."""
        idx = idx.to(self.lengths.device)
        lengths = self.lengths[idx]
        longest = self.longest if torch.compiler.is_compiling() else int(lengths.max())
        positions = torch.arange(longest, device=idx.device)  # (L,)
        mask = positions[None] >= lengths[:, None]  # (B, L) True after EOT
        rows = (self.offsets[idx, None] + positions[None]).masked_fill(mask, 0)  # padded slots read row 0
        return self.global_feats[idx], self.token_feats[rows], mask

    def to(self, device) -> "CaptionFeatures":
        return CaptionFeatures(*(t.to(device) for t in (self.global_feats, self.token_feats, self.lengths, self.offsets)))


@torch.no_grad()
def encode_captions(clip, tokens: torch.Tensor, batch_size: int = 256) -> CaptionFeatures:
    """Encode tokenised captions (N, 77) once: each distinct caption once (the templates repeat), sorted by
    length so that every batch is EOT-truncated tightly."""
    unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)  # (U, 77), (N,)
    eot = unique.argmax(dim=-1)  # (U,) the first EOT (largest id)
    device = clip.token_embedding.weight.device
    glob, pieces = [None] * len(unique), [None] * len(unique)
    for part in torch.argsort(eot, stable=True).split(batch_size):
        g, feats = clip.encode_text_tokens(unique[part].to(device))  # (b, E), (b, L, E)
        for k, u in enumerate(part.tolist()):
            glob[u], pieces[u] = g[k], feats[k, : int(eot[u]) + 1]
    lengths = eot + 1
    offsets = torch.cumsum(lengths, 0) - lengths
    return CaptionFeatures(torch.stack(glob).cpu()[inverse], torch.cat(pieces).cpu(), lengths[inverse], offsets[inverse])


class TaIDPT(SavedPrompt, nn.Module):
    """A frozen CLIP plus two learned shared contexts: `ctx_global` and `ctx_local` (each (n_ctx, width))."""

    # for from_prompt_state_dict: the encoding, and the test-time temperature / merge rate (e.g. T = 4 for NUS-WIDE)
    CONFIG, OVERRIDABLE = TaIDPTConfig, (*ENCODING_FIELDS, "temperature_image", "merge_rate")

    def __init__(self, clip_model, classnames, config: TaIDPTConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else TaIDPTConfig()
        self.clip = clip_model.eval().requires_grad_(False)
        self.classnames = list(classnames)
        device = clip_model.token_embedding.weight.device
        # drawn in the official order: the global context (official `ctx`), then the local (`ctx_double`)
        self.ctx_global = nn.Parameter(random_context(config.n_ctx, clip_model.text_width, std=config.init_std).to(device))
        self.ctx_local = nn.Parameter(random_context(config.n_ctx, clip_model.text_width, std=config.init_std).to(device))
        self.prompts = ClassPrompts(clip_model, self.classnames, config.n_ctx, text_chunk=config.text_chunk,
                                    checkpoint=config.checkpoint, share_prefix=config.share_prefix)  # fmt: skip

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen backbone: BatchNorm keeps its running statistics, as the official trainer
        return self

    def class_embeddings(self):
        """(global (C, E), local (C, E)) class embeddings of the two prompts, unnormalised."""
        return self.prompts.encode(self.clip, self.ctx_global), self.prompts.encode(self.clip, self.ctx_local)

    def logits(self, global_feats, local_feats, temperature: float, mask=None, class_emb=None):
        """(global (B, C), local (B, C)) logits of features (B, E) and (B, L, E); class_emb as class_embeddings()."""
        emb_g, emb_l = self.class_embeddings() if class_emb is None else class_emb
        scale = self.config.logit_scale
        return global_logits(global_feats, emb_g, scale), local_logits(local_feats, emb_l, temperature, mask, scale)

    def forward_text(self, tokens: torch.Tensor):
        """Texts as images: tokenised captions (B, 77) -> (logits_global, logits_local), each (B, C)."""
        with torch.no_grad():  # the caption side is frozen; only the class prompts carry gradients
            feats_g, feats_l = self.clip.encode_text_tokens(tokens)  # (B, E), (B, L, E)
            positions = torch.arange(feats_l.shape[1], device=tokens.device)
            mask = positions[None] > tokens.argmax(dim=-1)[:, None]  # (B, L) padding after EOT
        return self.logits(feats_g, feats_l, self.config.temperature_text, mask)

    def image_features(self, images: torch.Tensor):
        """(global (B, E), local (B, HW, E)) of images: see `image_features`."""
        return image_features(self.clip, images)

    def forward(self, images: torch.Tensor, class_emb=None):
        """Images (B, 3, R, R), any R for ResNets -> (logits_global, logits_local, scores), each (B, C)."""
        logits_g, logits_l = self.logits(*self.image_features(images), self.config.temperature_image, class_emb=class_emb)
        rate = self.config.merge_rate
        return logits_g, logits_l, rate * logits_g + (1 - rate) * logits_l

    def loss(self, logits_global, logits_local, labels):
        """ranking(global) + ranking(local): hinge, margin `config.margin`, pairs summed, batch mean."""
        margin = self.config.margin
        return ranking_loss(logits_global, labels, margin=margin) + ranking_loss(logits_local, labels, margin=margin)

    def caption_loss(self, captions: CaptionFeatures, idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training step, texts as images: the cached features of captions idx (B,) stand in for an image's
        (EOT feature f_b, token features x_{b,l} at temperature_text, padding masked), labels (B, C) multi-hot;
        loss = ranking(g, y) + ranking(loc, y) (module docstring): `official_loss` up to rounding and the mask quirk."""
        glob, local, mask = captions.batch(idx)  # (B, E), (B, L, E), (B, L); a feature cache may store fp16
        logits_g, logits_l = self.logits(glob.float(), local.float(), self.config.temperature_text, mask)
        return self.loss(logits_g, logits_l, labels)

    # ---- saving: only the two contexts plus what is needed to rebuild the prompts ----
    def prompt_state_dict(self) -> dict:
        return {"method": "taidpt", "config": asdict(self.config), "classnames": list(self.classnames),
                "ctx_global": self.ctx_global.detach().cpu().clone(),
                "ctx_local": self.ctx_local.detach().cpu().clone()}  # fmt: skip

    def load_prompt_state_dict(self, state: dict) -> None:
        """Load saved contexts; they are shared by all classes, so any class list works."""
        if state.get("method") != "taidpt":
            raise ValueError(f"this prompt was learned by {state.get('method')!r}, not TaI-DPT: load it with that method")
        for name in ("ctx_global", "ctx_local"):
            saved, own = state[name], getattr(self, name)
            if tuple(saved.shape) != tuple(own.shape):
                raise ValueError(f"the saved {name} is {tuple(saved.shape)}, this model's is {tuple(own.shape)} "
                                 f"(n_ctx or the text width differs): build the model with TaIDPT.from_prompt_state_dict")
            with torch.no_grad():
                own.copy_(saved)


# ---- the official formulation (guozix/TaI-DPT), the reference twin of `TaIDPT.caption_loss`
def official_logits(clip, prompts, ctx_global, ctx_local, tokens, temperature=50.0, scale=4.0):
    """The official text-side forward: captions and class prompts at all 77 positions, 77-position aggregation.

    tokens (B, 77) captions, re-encoded at every step; prompts a `ClassPrompts(..., full_length=True,
    share_prefix=False)`; the padding mask is the official additive -10000 on `token id == 0`.
    """
    with torch.no_grad():  # frozen encoder, no learnable input: no graph, but recomputed every step
        x = clip.token_embedding(tokens) + clip.positional_embedding
        feats = clip.ln_final(clip.transformer(x)) @ clip.text_projection  # (B, 77, E)
        glob = feats[torch.arange(len(tokens)), tokens.argmax(dim=-1)]  # (B, E)
    emb_g = F.normalize(prompts.encode(clip, ctx_global), dim=-1)  # (C, E), 77 positions (full_length)
    emb_l = F.normalize(prompts.encode(clip, ctx_local), dim=-1)
    logits_g = scale * F.normalize(glob, dim=-1) @ emb_g.t()
    cos = F.normalize(feats, dim=-1) @ emb_l.t() + (tokens == 0)[..., None] * -10000.0  # (B, 77, C)
    weights = (temperature * cos).softmax(dim=1)
    return logits_g, scale * (cos * weights).sum(dim=1)


def official_ranking_loss(scores, labels, margin: float = 1.0):
    """The official trainers/utils.py ranking_loss at scale 1: the (B, C, C) pairwise hinge, batch mean."""
    y = labels.float()
    pairs = margin - scores[:, :, None] + scores[:, None, :]  # (B, i, j): margin - s_i + s_j
    hinge = torch.maximum(torch.zeros_like(pairs), pairs) * y[:, :, None] * (1 - y[:, None, :])
    return hinge.sum(dim=(1, 2)).mean()


def official_loss(clip, prompts, ctx_global, ctx_local, tokens, labels, temperature=50.0, scale=4.0):
    """The official caption step's loss: `official_logits`, then `official_ranking_loss` of each branch."""
    logits_g, logits_l = official_logits(clip, prompts, ctx_global, ctx_local, tokens, temperature, scale)
    return official_ranking_loss(logits_g, labels) + official_ranking_loss(logits_l, labels)
