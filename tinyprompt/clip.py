"""The lean CLIP: OpenAI's model with exact numerics, fp32 weights and hook points for prompt learning.

Paper: "Learning Transferable Visual Models From Natural Language Supervision", Radford et al. 2021
(arXiv 2103.00020). Reference code: openai/CLIP `clip/model.py` @ d05afc4. Same module tree and
state-dict key names as OpenAI's, so released checkpoints load unchanged (`tinyprompt.clip_checkpoint.build_model`
reads the architecture from a state dict's shapes); the constructor takes OpenAI's arguments, then what open_clip's
models vary beyond them, checked by `tinyprompt.clip_config.CLIPConfig`. Weights stay fp32 (OpenAI's loader rounds
them to fp16); autocast gives the speed instead.

Hook points, so that no method forks this file:
- `encode_text(tokens)` runs the causal text transformer only up to the last EOT of the batch (exact:
  later positions never reach an earlier one), `full_length=True` runs all `context_length` positions;
- `encode_text_embeddings(embeddings, eot_index)`: prompts given as token embeddings (CoOp, SHIP, POMP);
- `text_prefix(embeddings)` and `encode_text_after_prefix(prefix, embeddings, eot_index)`: a prefix that many
  prompts share (SOS + a shared context) encoded once, its keys and values read by every prompt (exact: causal);
- `encode_text_tokens(tokens)`: every token's projected feature ("texts as images", TaI-DPT);
- `image_feature_map(images)` and `encode_image_dense(images)`: the map before pooling and per-location
  features (TaI-DPT, arXiv 2211.12739: `c_proj(v_proj(x_l))`, no attention).
Attention is batch-first `F.scaled_dot_product_attention`; parameter names stay `nn.MultiheadAttention`'s.
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from tinyprompt.clip_config import CLIPConfig

__all__ = ["CLIP", "eot_index"]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (input upcast, result cast back), as OpenAI's, also under autocast."""

    def forward(self, x):
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x) (not the erf GELU)."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def _randn(*shape, scale=1.0, divide=1.0):
    """OpenAI's `scale * randn(shape)` / `randn(shape) / divide` draws (randn = empty().normal_()); on the
    meta device only the shape is made: its Python random/arithmetic kernels cost seconds of imports."""
    x = torch.empty(*shape)
    if x.is_meta:
        return x
    x.normal_()
    return x if scale == divide == 1.0 else scale * x / divide


def _attend(q, k, v, heads: int, causal: bool = False, mask=None):
    """Multi-head scaled dot-product attention of q (N, Lq, D) over k, v (N, Lk, D) -> (N, Lq, D).

    mask (Lq, Lk), True where a query may look, replaces `causal` when the keys start before the queries."""
    n, lq, d = q.shape
    q, k, v = (t.unflatten(-1, (heads, d // heads)).transpose(1, 2) for t in (q, k, v))  # (N, H, L, D/H)
    try:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
    except RuntimeError as e:
        if q.device.type != "cpu" or "avx512" not in str(e):
            raise
        # PyTorch's CPU flash kernel runs bf16 over > 128 positions only with AVX-512: the math kernel computes the
        # same attention on any CPU
        with sdpa_kernel(SDPBackend.MATH):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
    return out.transpose(1, 2).reshape(n, lq, d)


class MultiheadAttention(nn.Module):
    """nn.MultiheadAttention's parameters (packed q/k/v `in_proj_*`, `out_proj`), batch-first, applied in two
    steps, `project` then `attend`, so that a prefix cache can keep the keys and values in between."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # rows: q, k, v
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        # nn.MultiheadAttention's initialisation, in its order (so seeded models match OpenAI's)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def project(self, x):  # (N, L, D) -> q, k, v, each (N, L, D)
        return F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)

    def attend(self, q, k, v, causal: bool = False, prefix=None, mask=None):  # (N, L, D) each -> (N, L, D)
        """Attention of q over k, v, then out_proj; a prefix (keys, values), each (1, P, D), holds P earlier
        positions that every row also attends to, under mask (L, P + L)."""
        if prefix is not None:  # the same P positions before every row: keys and values (N, P + L, D)
            n, p = q.shape[0], prefix[0].shape[1]
            k, v = (torch.cat([past.expand(n, p, -1), own], dim=1) for past, own in zip(prefix, (k, v)))
        return self.out_proj(_attend(q, k, v, self.heads, causal, mask))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); OpenAI's MLP is 4x wide, QuickGELU."""

    def __init__(self, width: int, heads: int, causal: bool = False, mlp_width: int | None = None,
                 quick_gelu: bool = True):  # fmt: skip
        super().__init__()
        self.causal = causal
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        hidden = mlp_width or 4 * width
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", QuickGELU() if quick_gelu else nn.GELU()),  # open_clip's GELU models: the erf GELU
            ("c_proj", nn.Linear(hidden, width)),
        ]))  # fmt: skip
        self.ln_2 = LayerNorm(width)

    def forward(self, x, prefix=None, mask=None):  # (N, L, D); out-of-place, so torch.utils.checkpoint can recompute it
        return self.finish(x, *self.project(x), prefix, mask)

    def project(self, x):  # (N, L, D) -> the attention's q, k, v of x, each (N, L, D)
        return self.attn.project(self.ln_1(x))

    def finish(self, x, q, k, v, prefix=None, mask=None):  # the rest of the block, from x's projections
        x = x + self.attn.attend(q, k, v, self.causal, prefix, mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of blocks; set `grad_checkpointing = True` to recompute each block in backward.

    A prefix cache, for many sequences of a causal stack that start with the same P positions: those attend
    only to each other, so they are the same in every sequence. `prefix(x)` gives every block's keys and
    values of them (one row); `forward(rest, prefix)` runs only the positions after them, each attending to
    the prefix as to its own earlier positions: the same function, the prefix not recomputed per sequence.
    """

    def __init__(self, width: int, layers: int, heads: int, causal: bool = False, mlp_width: int | None = None,
                 quick_gelu: bool = True):  # fmt: skip
        super().__init__()
        self.width, self.layers, self.causal, self.grad_checkpointing = width, layers, causal, False
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, causal, mlp_width, quick_gelu) for _ in range(layers)]
        )

    def forward(self, x, prefix=None):  # (N, L, D) -> (N, L, D); prefix: `prefix(...)` of P positions before x's
        mask = None
        if prefix is not None:  # x's query i is position P + i: it sees keys 0 .. P + i
            p, length = prefix[0][0].shape[1], x.shape[1]
            mask = torch.ones(length, p + length, dtype=torch.bool, device=x.device).tril(diagonal=p)  # (L, P + L)
        for block, past in zip(self.resblocks, prefix or [None] * self.layers):
            use_checkpoint = self.grad_checkpointing and torch.is_grad_enabled()
            x = checkpoint(block, x, past, mask, use_reentrant=False) if use_checkpoint else block(x, past, mask)
        return x

    def prefix(self, x):  # (1, P, D) -> per block, the keys and values (1, P, D) of x, for `forward`
        if not self.causal:  # without the causal mask the prefix attends to what follows it: no cache is exact
            raise ValueError("a prefix cache needs a causal transformer (CLIP's text tower), this one is not")
        cache = []
        for block in self.resblocks:
            q, k, v = block.project(x)
            cache.append((k, v))
            if len(cache) < self.layers:  # the last block's output is never read
                x = block.finish(x, q, k, v)
        return cache


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased strides: an average pool does the striding, convs keep stride 1."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # OpenAI's names: "-1" pool (size 1 in stage 1: a no-op), "0" conv, "1" BN
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))  # fmt: skip

    def forward(self, x):  # (N, C, H, W) -> (N, 4 planes, H / stride, W / stride)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pool: the mean of the map's locations queries [mean; locations] with one MHA."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(_randn(spacial_dim**2 + 1, embed_dim, divide=embed_dim**0.5))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x, positional_embedding: bool = True):  # (N, C, H, W) -> (N, E)
        x = x.flatten(2).transpose(1, 2)  # (N, HW, C), locations row-major
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (N, 1 + HW, C)
        if positional_embedding:
            if x.shape[1] != self.positional_embedding.shape[0]:
                side = math.isqrt(self.positional_embedding.shape[0] - 1)
                raise ValueError(f"the attention pool's positional embedding is for a {side}x{side} map, got "
                                 f"{x.shape[1] - 1} locations: feed {side * 32}px images or positional_embedding=False")
            x = x + self.positional_embedding.to(x.dtype)
        # only the mean token queries (TaI-DPT's copy queries with all tokens: its row 0 is the same)
        out = _attend(self.q_proj(x[:, :1]), self.k_proj(x), self.v_proj(x), self.num_heads)
        return self.c_proj(out[:, 0])

    def dense(self, x):  # (N, C, H, W) -> (N, HW, E): c_proj(v_proj(x_l)) per location, no attention
        return self.c_proj(self.v_proj(x.flatten(2).transpose(1, 2)))


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: a 3-conv stem with an average pool, anti-aliased bottlenecks, an attention pool."""

    def __init__(self, layers, output_dim: int, heads: int, input_resolution: int = 224, width: int = 64):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width  # mutated by _make_layer while building
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32  # the ResNet feature dimension
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_map(self, x):  # (N, 3, R, R) -> (N, 32 width, R / 32, R / 32)
        x = x.to(self.conv1.weight.dtype)
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(bn(conv(x)))
        x = self.avgpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):  # (N, 3, R, R) -> (N, E)
        return self.attnpool(self.feature_map(x))

    def dense(self, x, positional_embedding: bool = True):  # -> (N, E), (N, HW, E)
        fmap = self.feature_map(x)
        return self.attnpool(fmap, positional_embedding), self.attnpool.dense(fmap)


class VisionTransformer(nn.Module):
    """ViT: patches + class token + positional embedding, ln_pre, transformer, ln_post(token 0) @ proj."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int,
                 mlp_width: int | None = None, quick_gelu: bool = True):  # fmt: skip
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(_randn(width, scale=scale))
        self.positional_embedding = nn.Parameter(_randn((input_resolution // patch_size) ** 2 + 1, width, scale=scale))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_width=mlp_width, quick_gelu=quick_gelu)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(_randn(width, output_dim, scale=scale))

    def feature_map(self, x):  # (N, 3, R, R) -> (N, 1 + HW, width): all tokens before ln_post
        x = self.conv1(x.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)  # (N, HW, width), row-major
        if x.shape[1] + 1 != self.positional_embedding.shape[0]:
            raise ValueError(
                f"this ViT takes {self.input_resolution}px images ({self.positional_embedding.shape[0] - 1} "
                f"patches); got {x.shape[1]} patches: resize the images to {self.input_resolution}px"
            )
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.transformer(self.ln_pre(x))

    def forward(self, x):  # (N, 3, R, R) -> (N, E)
        return self.ln_post(self.feature_map(x)[:, 0]) @ self.proj

    def dense(self, x, positional_embedding: bool = True):  # -> (N, E), (N, HW, E)
        if not positional_embedding:
            raise ValueError("a ViT adds its positional embedding before the transformer: it cannot be left out")
        tokens = self.ln_post(self.feature_map(x)) @ self.proj  # (N, 1 + HW, E)
        return tokens[:, 0], tokens[:, 1:]


class CLIP(nn.Module):
    """Image and text towers, OpenAI's constructor and parameter names; fp32 unless cast by the caller."""

    # the model's own tokenizer (`tinyprompt.load` sets it for built-in models); None: OpenAI's BPE.
    # Read it through `tinyprompt.tokenizer.model_tokenizer(model)` / `tokenize_for(model, texts)`.
    tokenizer = None

    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads, transformer_layers,
                 vision_head_width=64, vision_mlp_width=None, text_mlp_width=None, quick_gelu=True):  # fmt: skip
        super().__init__()
        self.config = cfg = CLIPConfig(
            embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
            context_length, vocab_size, transformer_width, transformer_heads, transformer_layers,
            vision_head_width, vision_mlp_width, text_mlp_width, quick_gelu,
        )  # fmt: skip
        self.embed_dim, self.context_length, self.vocab_size = embed_dim, context_length, vocab_size
        self.text_width = transformer_width
        if cfg.is_resnet:  # its activations are ReLUs, whatever quick_gelu says (as in open_clip)
            self.visual = ModifiedResNet(cfg.vision_layers, embed_dim, cfg.vision_heads, image_resolution, vision_width)
        else:
            self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                            cfg.vision_heads, embed_dim, cfg.vision_mlp_width, quick_gelu)  # fmt: skip
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, causal=True,
                                       mlp_width=cfg.text_mlp_width, quick_gelu=quick_gelu)  # fmt: skip
        embedding = _randn(vocab_size, transformer_width)  # nn.Embedding's own N(0, 1) draw, skipped on meta
        self.token_embedding = nn.Embedding(vocab_size, transformer_width, _weight=embedding)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.full([], math.log(1 / 0.07)))
        self.initialize_parameters()

    def initialize_parameters(self):
        """OpenAI's initialisation (used when pre-training from scratch; loading overwrites it)."""
        if self.text_projection.is_meta:  # shapes only (build_model): nothing to draw
            return
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(proj.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for name, param in stage.named_parameters():
                    if name.endswith("bn3.weight"):  # each residual branch starts as zero
                        nn.init.zeros_(param)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std, attn_std, fc_std = width**-0.5 * (2 * layers) ** -0.5, width**-0.5, (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    # ---- image side ----
    def encode_image(self, images):  # (N, 3, R, R) -> (N, E), unnormalised
        return self.visual(images.to(self.dtype))

    def image_feature_map(self, images):
        """ResNet: the map after layer4 (N, C, H, W); ViT: all tokens before ln_post (N, 1 + HW, width)."""
        return self.visual.feature_map(images.to(self.dtype))

    def encode_image_dense(self, images, positional_embedding: bool = True):
        """(global (N, E), local (N, HW, E)), locations row-major (l = h W + w), unnormalised.

        ResNet: global = the attention pool, with or without its positional embedding (TaI-DPT uses
        without, which also works at any resolution); local = c_proj(v_proj(x_l)). ViT: global =
        encode_image; local = ln_post(patch tokens) @ proj.
        """
        return self.visual.dense(images.to(self.dtype), positional_embedding)

    # ---- text side ----
    def _positioned(self, embeddings, start: int = 0):  # (N, L, width) at positions start .. start + L - 1
        room = self.context_length - start
        if embeddings.ndim != 3 or embeddings.shape[-1] != self.text_width or embeddings.shape[1] > room:
            raise ValueError(
                f"text embeddings must be (N, L <= {room}, {self.text_width}), got {tuple(embeddings.shape)}"
            )
        return embeddings + self.positional_embedding[start : start + embeddings.shape[1]].to(embeddings.dtype)

    def _text_states(self, embeddings, prefix=None):  # (N, L, width) before positions -> after ln_final
        start = 0 if prefix is None else prefix[0][0].shape[1]  # P positions come before the embeddings
        return self.ln_final(self.transformer(self._positioned(embeddings, start), prefix))

    def encode_text_embeddings(self, embeddings, eot_index):
        """Prompts as embeddings (N, L, width) BEFORE the positional embedding, pooled at eot_index (N,) -> (N, E)."""
        return self.encode_text_after_prefix(None, embeddings, eot_index)

    def text_prefix(self, embeddings):
        """The first P positions shared by many prompts, as embeddings (1, P, width) before the positional
        embedding -> per text block, their keys and values (1, P, width), for `encode_text_after_prefix`."""
        return self.transformer.prefix(self._positioned(embeddings))

    def encode_text_after_prefix(self, prefix, embeddings, eot_index):
        """`encode_text_embeddings(cat(prefix embeddings, embeddings), P + eot_index)`, the P prefix positions read
        from their `text_prefix` instead of recomputed per row: embeddings (N, L, width) are positions P .. P + L - 1,
        eot_index (N,) counts from P. prefix None: no prefix (P = 0)."""
        if eot_index.shape != embeddings.shape[:1]:
            raise ValueError(f"eot_index must have shape ({embeddings.shape[0]},), got {tuple(eot_index.shape)}")
        x = self._text_states(embeddings, prefix)  # (N, L, width)
        return x[torch.arange(x.shape[0], device=x.device), eot_index] @ self.text_projection

    def _truncate(self, tokens, full_length: bool):  # -> tokens (N, L), eot (N,)
        eot = eot_index(tokens)
        if full_length or not tokens.numel():
            top, length = int(tokens.max()) if tokens.numel() else 0, tokens.shape[1]
        else:  # the largest id and the longest EOT read back together: one device sync, not two
            top, last = torch.stack([tokens.max(), eot.max()]).tolist()
            length = last + 1  # causal: later positions never matter
        if top >= self.vocab_size:  # ids of another vocabulary: say so, instead of an index error (or a CUDA assert)
            raise ValueError(
                f"token id {top} is outside this model's {self.vocab_size}-token vocabulary: the tokens come from "
                f"another tokenizer (tinyprompt.tokenize is OpenAI's); tokenize with the model's own: "
                f"tinyprompt.tokenize_for(model, texts)"
            )
        return tokens[:, :length], eot

    def encode_text(self, tokens, full_length: bool = False):  # (N, context_length) ids -> (N, E)
        tokens, eot = self._truncate(tokens, full_length)
        return self.encode_text_embeddings(self.token_embedding(tokens), eot)

    def encode_text_tokens(self, tokens):
        """TaI-DPT's texts as images: (pooled (N, E), per-token (N, L, E)), L = max EOT index + 1."""
        tokens, eot = self._truncate(tokens, full_length=False)
        feats = self._text_states(self.token_embedding(tokens)) @ self.text_projection  # (N, L, E)
        return feats[torch.arange(feats.shape[0], device=feats.device), eot], feats

    def forward(self, images, tokens):  # -> logits_per_image (N, M), logits_per_text (M, N)
        image = self.encode_image(images)
        text = self.encode_text(tokens)
        image = image / image.norm(dim=1, keepdim=True)
        text = text / text.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image @ text.t()  # no clamp at inference, as OpenAI
        return logits_per_image, logits_per_image.t()


def eot_index(tokens):
    """(N, L) token ids -> (N,) position of the first EOT (the largest id: argmax returns its first hit)."""
    return tokens.argmax(dim=-1)
