"""ILM-VP: visual prompting with iterative label mapping, for any frozen classifier and for CLIP.

From "Understanding and Improving Visual Prompting: A Label-Mapping Perspective" (Chen et al., CVPR 2023,
arXiv 2211.11635; official code OPTML-Group/ILM-VP). A frozen source classifier with S classes is
repurposed for a target task with T classes by learning only an input-space prompt:

    logits_T(x) = f_source(prompt(x))[:, mapping]        mapping: LongTensor[T], one source class per target

- CNN path (`PaddingPrompt`): the n x n image is zero-padded (not resized) into the source input size,
  a learned frame sigmoid(P) * mask is added in [0, 1] pixel space, then the source normalisation.
- CLIP path (`AdditivePrompt`): a learned frame P * mask is added to the CLIP-normalised image. The
  "source classes" are 81 * C texts (81 templates x C target names, template-major) and the label
  mapping picks one text per target class: text-prompt selection (`clip_text_source`).
- The mapping (`label_mapping.py`): random (rlm), frequency once with the initial prompt (flm), or
  iterative (ilm): recomputed from top-1 source predictions on the training data before every epoch.
"""
import os
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyprompt.methods.label_mapping import frequency_matrix, greedy_label_mapping, random_label_mapping
from tinyprompt.templates import IMAGENET_TEMPLATES
from tinyprompt.zeroshot import format_prompts, template_features

__all__ = [
    "ILMVP", "ILMVPConfig", "PaddingPrompt", "AdditivePrompt", "FrozenClassifier", "CLIPClassifier",
    "ILM_TEMPLATES", "IMAGENET_MEAN", "IMAGENET_STD", "clip_text_source", "load_classifier",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the official CLIP script: its DEFAULT_TEMPLATE followed by CLIP's 80 ImageNet templates
ILM_TEMPLATES = ("This is a photo of a {}.",) + tuple(IMAGENET_TEMPLATES)
MAPPINGS = ("ilm", "flm", "rlm")


class PaddingPrompt(nn.Module):
    """The official `ExpansiveVisualPrompt`: (pad0(x) + sigmoid(prompt) * mask - mean) / std.

    x: (B, 3, n, n) in [0, 1] -> (B, 3, out, out) normalised. The image is zero-padded, not resized;
    an odd out - n puts the extra pixel top/left. mask = 1 on the border and `center_mask` (n, n)
    inside the image window (default zeros; e.g. the ABIDE lower triangle). Official init: zeros,
    so the border starts at sigmoid(0) = 0.5 grey.
    """

    def __init__(self, image_size: int, output_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 center_mask=None):
        super().__init__()
        if not 1 <= image_size <= output_size:
            raise ValueError(f"PaddingPrompt needs 1 <= image_size <= output_size, got {image_size} and {output_size}")
        self.image_size, self.output_size = image_size, output_size
        self.l_pad = (output_size - image_size + 1) // 2  # top and left
        self.r_pad = (output_size - image_size) // 2  # bottom and right
        if center_mask is None:
            center_mask = torch.zeros(image_size, image_size)
        if tuple(center_mask.shape) != (image_size, image_size):
            raise ValueError(f"center_mask must be ({image_size}, {image_size}), got {tuple(center_mask.shape)}")
        pads = (self.l_pad, self.r_pad, self.l_pad, self.r_pad)
        mask = F.pad(center_mask.float().expand(3, -1, -1), pads, value=1.0)  # (3, out, out)
        self.prompt = nn.Parameter(torch.zeros(3, output_size, output_size))
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def forward(self, x):  # (B, 3, n, n) -> (B, 3, out, out)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"PaddingPrompt was built for {self.image_size}x{self.image_size} images, got "
                             f"{tuple(x.shape[-2:])}: resize the images or build the prompt for that size")
        x = F.pad(x, (self.l_pad, self.r_pad, self.l_pad, self.r_pad), value=0.0)
        x = x + torch.sigmoid(self.prompt) * self.mask  # pixel space, no clamp (official)
        return (x - self.mean) / self.std  # torchvision Normalize: subtract, then divide


class AdditivePrompt(nn.Module):
    """The official `AdditiveVisualPrompt(size, pad)`: x + prompt * mask on CLIP-normalised images.

    mask = 1 on the outer frame of width `pad` (all ones when size == 2 pad). No sigmoid, no clamp.
    The official forward adds in place into its input; this one is out of place (same values).
    """

    def __init__(self, image_size: int, pad: int):
        super().__init__()
        if not 0 < 2 * pad <= image_size:
            raise ValueError(f"AdditivePrompt needs 0 < 2 * pad <= image_size, got pad={pad} for size {image_size}")
        self.image_size, self.pad = image_size, pad
        mask = F.pad(torch.zeros(3, image_size - 2 * pad, image_size - 2 * pad), (pad,) * 4, value=1.0)
        self.prompt = nn.Parameter(torch.zeros(3, image_size, image_size))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):  # (B, 3, R, R) -> (B, 3, R, R)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"AdditivePrompt was built for {self.image_size}x{self.image_size} inputs, "
                             f"got {tuple(x.shape[-2:])}")
        return x + self.prompt * self.mask


class FrozenClassifier(nn.Module):
    """A frozen source model: normalised images (B, 3, input_size, input_size) -> logits (B, S).

    `network` is an nn.Module (kept in eval mode whatever `train()` is called with, weights frozen) or
    any callable. `mean`/`std` describe the normalisation it expects (the padding prompt applies it).
    S is read from one probe forward when not given.
    """

    def __init__(self, network, input_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD, n_cls=None):
        super().__init__()
        if not callable(network):
            raise TypeError(f"the source network must be an nn.Module or a callable, got {type(network).__name__}")
        if isinstance(network, nn.Module):
            for weight in network.parameters():  # (TorchScript modules have no requires_grad_)
                weight.requires_grad_(False)
        self.network = network
        self.input_size, self.mean, self.std = input_size, tuple(mean), tuple(std)
        self.eval()
        if n_cls is None:
            with torch.no_grad():
                n_cls = self(torch.zeros(1, 3, input_size, input_size, device=_device_of(network))).shape[-1]
        self.n_cls = int(n_cls)

    def train(self, mode: bool = True):
        super().train(mode)
        if isinstance(self.network, nn.Module):
            self.network.eval()  # BatchNorm keeps its running statistics (official: never train())
        return self

    def forward(self, x):  # (B, 3, R, R) -> (B, S)
        return self.network(x)


class CLIPClassifier(nn.Module):
    """CLIP as a frozen zero-shot source: exp(logit_scale) * normalise(encode_image(x)) @ text_features.T.

    text_features (S, E) are L2-normalised, one row per source ("virtual") label. The image feature is
    normalised out of place: the official in-place division breaks autograd outside CUDA autocast.
    """

    def __init__(self, clip_model, text_features, texts=None):
        super().__init__()
        clip_model.requires_grad_(False)
        self.clip = clip_model
        self.register_buffer("text_features", text_features.detach().float(), persistent=False)  # (S, E)
        self.texts = list(texts) if texts is not None else None
        self.input_size = clip_model.visual.input_resolution
        self.n_cls = text_features.shape[0]
        self.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()
        return self

    def forward(self, x):  # (B, 3, R, R) CLIP-normalised -> (B, S)
        features = self.clip.encode_image(x)
        features = features / features.norm(dim=-1, keepdim=True)
        return self.clip.logit_scale.exp() * features @ self.text_features.t()


def refine_classname(name: str) -> str:
    """The official class-name clean-up: lower case, '_' and '-' become spaces."""
    return name.lower().replace("_", " ").replace("-", " ")


def clip_text_source(clip_model, class_names, templates=ILM_TEMPLATES, batch_size: int = 256) -> CLIPClassifier:
    """The CLIP variant's source: one virtual label per (template, class) text, template-major.

    texts[r] = templates[r // C].format(class_names[r % C]); 81 * C separately normalised text features,
    no averaging; ILM then picks one text per target class (it may belong to another class).
    """
    names = [refine_classname(n) for n in class_names]
    features = template_features(clip_model, names, list(templates), batch_size)  # (K, C, E), normalised
    return CLIPClassifier(clip_model, features.flatten(0, 1), format_prompts(names, list(templates)))


def load_classifier(spec: str, input_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD, device="cpu"):
    """A FrozenClassifier from `torchvision:NAME` (pretrained weights; needs torchvision) or a TorchScript file."""
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        try:
            import torchvision
        except ImportError as e:
            raise ImportError(f"source {spec!r} needs torchvision: pip install torchvision (or pass a TorchScript "
                              f"file of the classifier)") from e
        try:
            network = torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as e:  # unknown name, or the weights cannot be downloaded (offline)
            raise ValueError(f"cannot build torchvision model {name!r} with its default pretrained weights: {e}. "
                             f"Check the name (torchvision.models.list_models()) and that the weights are cached") from e
        return FrozenClassifier(network.to(device), input_size, mean, std)
    if not os.path.isfile(spec):
        raise ValueError(f"source {spec!r} is neither 'torchvision:NAME' nor an existing TorchScript file")
    try:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; the archives still load
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(spec, map_location=device)
    except RuntimeError as e:
        raise ValueError(f"{spec} is not a TorchScript archive ({e}); save the classifier with "
                         f"torch.jit.save(torch.jit.script(model), path) or torch.jit.trace") from e
    return FrozenClassifier(network, input_size, mean, std)


@dataclass
class ILMVPConfig:
    mapping: str = "ilm"  # "ilm": recompute before every `interval`-th epoch; "flm": once at epoch 0; "rlm": random
    interval: int = 1  # ILM: epochs between mapping updates (official --mapping-interval 1)
    seed: int = 0  # RLM: seed of the random permutation

    def __post_init__(self):
        if self.mapping not in MAPPINGS:
            raise ValueError(f"ILMVPConfig.mapping = {self.mapping!r}: use one of {MAPPINGS}")
        if not (isinstance(self.interval, int) and self.interval >= 1):
            raise ValueError(f"ILMVPConfig.interval = {self.interval!r}: use an int >= 1")


class ILMVP(nn.Module):
    """Visual prompt + frozen source + label mapping: images -> target logits (B, T).

    The only trainable tensor is `prompt.prompt`; `mapping` (T,) is a buffer, saved with it in
    `prompt_state_dict()`. Call `update_mapping(batches, epoch)` before every epoch.
    """

    def __init__(self, source: nn.Module, prompt: nn.Module, n_cls: int, config: ILMVPConfig = None,
                 class_names=None):
        super().__init__()
        self.config = config or ILMVPConfig()
        self.source, self.prompt = source, prompt
        self.n_source, self.n_cls = source.n_cls, n_cls
        if n_cls > self.n_source:
            raise ValueError(f"{n_cls} target classes but the source has only {self.n_source}: "
                             f"a one-to-one label mapping needs T <= S")
        self.class_names = list(class_names) if class_names is not None else None
        if self.config.mapping == "rlm":
            mapping = random_label_mapping(self.n_source, n_cls, self.config.seed)
        else:  # placeholder until the first frequency pass
            mapping = torch.arange(n_cls)
        self.register_buffer("mapping", mapping)

    def train(self, mode: bool = True):
        super().train(mode)
        self.source.eval()  # the frozen backbone always runs in eval mode
        return self

    def source_logits(self, images):  # (B, 3, n, n) -> (B, S)
        return self.source(self.prompt(images))

    def forward(self, images):  # (B, 3, n, n) -> (B, T)
        return self.source_logits(images)[:, self.mapping]  # the official label mapping: an exact gather

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training step's loss, the official one: cross-entropy of the mapped logits (B, T) = self(images)
        against target labels (B,). Only the prompt gets a gradient (frozen source, the mapping a gather)."""
        return F.cross_entropy(logits, labels)

    @torch.no_grad()
    def frequency_mapping(self, batches):
        """(freq (S, T), mapping (T,)) from top-1 source predictions with the current prompt.

        One fresh pass over `batches` of (images, labels); nothing is reused from earlier passes.
        Only the top-1 indices are kept, not the (N, S) logits the official pass concatenates.
        """
        was_training = self.training
        self.eval()
        device = self.mapping.device
        predictions, labels = [], []
        for images, targets in batches:
            predictions.append(self.source_logits(images.to(device)).argmax(dim=1).cpu())  # first max wins
            labels.append(targets.cpu())
        self.train(was_training)
        if not predictions:
            raise ValueError("the label-mapping data is empty: pass the training batches (images, labels)")
        freq = frequency_matrix(torch.cat(predictions), torch.cat(labels), self.n_source, self.n_cls,
                                self.class_names)
        return freq, greedy_label_mapping(freq)

    def update_mapping(self, batches, epoch: int) -> bool:
        """Apply the configured mode before `epoch` (0-based); True when the mapping was recomputed."""
        mode = self.config.mapping
        due = (mode == "ilm" and epoch % self.config.interval == 0) or (mode == "flm" and epoch == 0)
        if due:
            self.mapping.copy_(self.frequency_mapping(batches)[1].to(self.mapping.device))
        return due

    def prompt_state_dict(self) -> dict:
        """The learned prompt and the current mapping (what a checkpoint needs), plus the plain config."""
        return {"method": "ilmvp", "config": asdict(self.config), "classnames": self.class_names,
                "prompt": self.prompt.prompt.detach().cpu().clone(), "mapping": self.mapping.cpu().clone()}

    def load_prompt_state_dict(self, state: dict) -> None:
        if state.get("method", "ilmvp") != "ilmvp":
            raise ValueError(f"this prompt was learned by {state['method']!r}, not ILM-VP: load it with that method")
        prompt, mapping = state["prompt"], state["mapping"]
        if prompt.shape != self.prompt.prompt.shape:
            raise ValueError(f"the saved prompt is {tuple(prompt.shape)}, this model's is "
                             f"{tuple(self.prompt.prompt.shape)}: build the model with the same prompt size")
        if mapping.shape != self.mapping.shape or int(mapping.max()) >= self.n_source:
            raise ValueError(f"the saved mapping ({mapping.numel()} targets, max source {int(mapping.max())}) does not "
                             f"fit {self.n_cls} targets over {self.n_source} source classes")
        with torch.no_grad():
            self.prompt.prompt.copy_(prompt)
            self.mapping.copy_(mapping)


def _device_of(network):
    if isinstance(network, nn.Module):
        for tensor in network.parameters():
            return tensor.device
        for tensor in network.buffers():
            return tensor.device
    return torch.device("cpu")
