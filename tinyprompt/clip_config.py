"""CLIP's architecture as numbers: `CLIPConfig`, OpenAI's nine released models, and open_clip's model configs.

Paper: "Learning Transferable Visual Models From Natural Language Supervision", Radford et al. 2021
(arXiv 2103.00020). `CLIPConfig` holds the positional arguments of OpenAI's `CLIP(...)` (openai/CLIP
`clip/model.py` @ d05afc4), then what open_clip (github.com/mlfoundations/open_clip) varies beyond them under the
same key names: the attention head width and the activation, which no tensor shape shows, and the MLP widths.
It checks that the numbers make a model (`tinyprompt.clip.CLIP` builds from one) and reads open_clip's model config
(`CLIPConfig.from_open_clip`), refusing every option whose math tinyprompt's CLIP does not implement.
`tinyprompt.clip_checkpoint` infers one from a state dict's shapes.
"""
from dataclasses import asdict, dataclass

__all__ = ["CLIPConfig", "OPENAI_MODELS"]


@dataclass
class CLIPConfig:
    """OpenAI's `CLIP(...)` positional arguments, in order, then what open_clip's models vary beyond them: the head
    width and activation (no tensor shape shows them) and the MLP widths (OpenAI's: 4x); a tuple `vision_layers`
    means a ResNet."""

    embed_dim: int = 512  # joint image-text embedding size
    image_resolution: int = 224  # input side in pixels
    vision_layers: int | tuple = 12  # ViT depth, or blocks per ResNet stage (4 ints)
    vision_width: int = 768  # ViT width, or ResNet stem width (features: 32x that)
    vision_patch_size: int | None = 16  # ViT patch side; None for a ResNet
    context_length: int = 77  # text positions
    vocab_size: int = 49408  # BPE vocabulary
    transformer_width: int = 512  # text width
    transformer_heads: int = 8  # text heads
    transformer_layers: int = 12  # text depth
    vision_head_width: int = 64  # ViT / attention-pool head size: OpenAI's 64, open_clip's ViT-H-14 80
    vision_mlp_width: int | None = None  # ViT MLP hidden width; None: 4 x vision_width (OpenAI); ResNet: None
    text_mlp_width: int | None = None  # text MLP hidden width; None: 4 x transformer_width (OpenAI)
    quick_gelu: bool = True  # OpenAI trained with x sigmoid(1.702 x); False: erf GELU (most open_clip models)

    def __post_init__(self):
        if isinstance(self.vision_layers, list):
            self.vision_layers = tuple(self.vision_layers)
        if self.vision_mlp_width is None and not self.is_resnet:
            self.vision_mlp_width = 4 * self.vision_width
        if self.text_mlp_width is None:
            self.text_mlp_width = 4 * self.transformer_width
        sizes = {k: v for k, v in asdict(self).items()
                 if k not in ("vision_layers", "vision_patch_size", "quick_gelu") and v is not None}  # fmt: skip
        features = self.vision_width * 32 if self.is_resnet else self.vision_width  # what the vision heads split
        patch = self.vision_patch_size
        checks = (
            (self.transformer_width % max(1, self.transformer_heads), f"transformer_width "
             f"{self.transformer_width} is not divisible by transformer_heads {self.transformer_heads}"),
            (self.is_resnet and (len(self.vision_layers) != 4 or self.image_resolution % 32),
             "a ResNet needs 4 stage depths and an image_resolution divisible by 32"),
            (not self.is_resnet and (not patch or self.image_resolution % patch),
             "a ViT needs an image_resolution divisible by vision_patch_size"),
            (self.vision_heads < 1 or features % self.vision_heads,
             f"vision_width {self.vision_width} gives {self.vision_heads} heads (head width {self.vision_head_width}) "
             f"that do not divide its {features} features: use a multiple of the head width (ViT) or an even "
             f"width (ResNet)"),
        )  # fmt: skip
        problems = [f"{k}={v} must be positive" for k, v in sizes.items() if v < 1]
        problems = problems or [message for bad, message in checks if bad]
        if problems:
            raise ValueError(f"invalid {self}: {'; '.join(problems)}")

    @classmethod
    def from_open_clip(cls, config: dict) -> "CLIPConfig":
        """open_clip's model config (open_clip/model_configs/<name>.json, `open_clip.get_model_config(name)`) as a
        CLIPConfig, open_clip's defaults for what it leaves out; an option whose math tinyprompt.clip does not implement
        (another tower, pooling, normalisation, tokenizer) raises a ValueError that names it."""
        if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
            raise ValueError(f"expected open_clip's model config, a dict with embed_dim, vision_cfg and text_cfg "
                             f"(open_clip.get_model_config(name)), got {str(config)[:80]}")  # fmt: skip
        vision, text = config["vision_cfg"], config["text_cfg"]
        sections = {"": config, "vision_cfg.": vision, "text_cfg.": text}
        unsupported = [f"{where}{key}={'{...}' if isinstance(value, dict) else repr(value)}"
                       for where, section in sections.items()
                       for key, value in section.items() if not _open_clip_supports(where, key, value)]  # fmt: skip
        if unsupported:
            raise ValueError(
                f"open_clip config sets {', '.join(unsupported)}: not supported by tinyprompt's CLIP, which builds "
                f"open_clip's plain CLIP towers only (OpenAI-style ViT or ModifiedResNet, text transformer with "
                f"argmax pooling, OpenAI's BPE tokenizer)"
            )
        layers, width = vision.get("layers", 12), vision.get("width", 768)
        resnet = isinstance(layers, (list, tuple))
        side = vision.get("image_size", 224)
        if isinstance(side, (list, tuple)):  # (height, width)
            if len(set(side)) != 1:
                raise ValueError(f"open_clip config sets vision_cfg.image_size={side}: only square images are built")
            side = side[0]
        text_width = text.get("width", 512)
        return cls(
            config["embed_dim"], side, layers, width, None if resnet else vision.get("patch_size", 16),
            text.get("context_length", 77), text.get("vocab_size", 49408), text_width, text.get("heads", 8),
            text.get("layers", 12),
            vision_head_width=vision.get("head_width", 64),
            # int(): open_clip's rounding (ViT-g-14: 1408 x 4.3637 -> 6144)
            vision_mlp_width=None if resnet else int(width * vision.get("mlp_ratio", 4.0)),
            text_mlp_width=int(text_width * text.get("mlp_ratio", 4.0)),
            quick_gelu=config.get("quick_gelu", False),  # open_clip's default is the erf GELU
        )  # fmt: skip

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.vision_layers, tuple)

    @property
    def vision_heads(self) -> int:  # not stored in checkpoints: OpenAI's are 64 wide, open_clip's config says
        return (self.vision_width * 32 if self.is_resnet else self.vision_width) // self.vision_head_width


# open_clip config options (model_configs/*.json) that build_model reads: sizes (checked against the tensor shapes)
# and the layout no shape shows (activation, head widths).
_OPEN_CLIP_READ = {
    "": {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"},
    "vision_cfg.": {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size"},
    "text_cfg.": {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"},
}
# options that change nothing at inference, or only act together with an option refused below
_OPEN_CLIP_INERT = {
    "": {"init_logit_scale"},  # an initial value: the checkpoint's logit_scale replaces it
    "vision_cfg.": {"patch_dropout", "output_tokens",  # training only; what forward returns
                    "attn_pooler_queries", "attn_pooler_heads",  # with attentional_pool
                    "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"},
    "text_cfg.": {"output_tokens", "pad_id", "eos_id",  # what forward returns; with embed_cls; with pool_type "eos"
                  "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"},
}  # fmt: skip
# the attention-block variants of open_clip's "custom" block, in both towers: only plain attention is implemented
_OPEN_CLIP_PLAIN_ATTENTION = {"block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
                              "scale_attn_inner": False, "scale_attn": False, "scale_fc": False}  # fmt: skip
# options implemented only at open_clip's default value: any other value is another tower, pooling or normalisation
_OPEN_CLIP_DEFAULTS = {
    "": {"custom_text": False, "init_logit_bias": None, "nonscalar_logit_scale": False},  # SigLIP's bias, CoCa, HF text
    "vision_cfg.": {"timm_model_name": None, "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
                    "pos_embed_type": "learnable", "final_ln_after_pool": False, "pool_type": "tok", "act_kwargs": None,
                    "norm_kwargs": None, **_OPEN_CLIP_PLAIN_ATTENTION},
    # another tokenizer leaves the model's math alone, but tinyprompt tokenizes with OpenAI's BPE only
    "text_cfg.": {"hf_model_name": None, "hf_tokenizer_name": None, "tokenizer_mode": None, "tokenizer_kwargs": None,
                  "ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False,
                  "pool_type": "argmax", "proj_bias": False, "proj_type": "linear", "act_kwargs": None,
                  "norm_kwargs": None, **_OPEN_CLIP_PLAIN_ATTENTION},
}  # fmt: skip


def _open_clip_supports(where: str, key: str, value) -> bool:
    """Whether option `key` = `value` of open_clip config section `where` leaves a tower tinyprompt.clip implements;
    options not listed above (multimodal_cfg, ones newer than this list) are refused rather than ignored."""
    if key in _OPEN_CLIP_READ[where] or key in _OPEN_CLIP_INERT[where]:
        return True
    defaults = _OPEN_CLIP_DEFAULTS[where]
    return key in defaults and value == defaults[key]


# OpenAI's nine released models (github.com/openai/CLIP), by tinyprompt.available_models() name
OPENAI_MODELS = {
    "RN50": CLIPConfig(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN101": CLIPConfig(512, 224, (3, 4, 23, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN50x4": CLIPConfig(640, 288, (4, 6, 10, 6), 80, None, 77, 49408, 640, 10, 12),
    "RN50x16": CLIPConfig(768, 384, (6, 8, 18, 8), 96, None, 77, 49408, 768, 12, 12),
    "RN50x64": CLIPConfig(1024, 448, (3, 15, 36, 10), 128, None, 77, 49408, 1024, 16, 12),
    "ViT-B/32": CLIPConfig(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": CLIPConfig(512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": CLIPConfig(768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
    "ViT-L/14@336px": CLIPConfig(768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12),
}
