"""Zero-shot classification with CLIP: classifier weights from class names and templates.

CLIP (Radford et al., arXiv 2103.00020) classifies an image by comparing its feature with the text
features of prompts such as "a photo of a {class}."; CoOp's zero-shot baselines (Zhou et al., arXiv
2109.01134, `trainers/zsclip.py`) do exactly this with one template (ZeroshotCLIP) or an ensemble
(ZeroshotCLIP2). For template t and class c:

    f_tc        = normalise(encode_text(tokenize(t.format(c))))      ("_" in c becomes a space)
    w_c         = normalise(mean_t f_tc)                              classifier row, (C, E)
    logits(x)   = exp(logit_scale) * normalise(encode_image(x)) @ W.T

`tinyprompt zeroshot` (tinyprompt/commands/zeroshot.py) runs this over a folder-per-class image set. Two class
names that give the same prompt are refused (`tinyprompt.prompts.prompt_names`): the prediction between them
would be arbitrary.
"""
import torch
import torch.nn.functional as F

from tinyprompt.prompts import prompt_names
from tinyprompt.tokenizer import tokenize_for

__all__ = ["format_prompts", "template_features", "zeroshot_classifier", "zeroshot_logits"]


def format_prompts(classnames, templates) -> list[str]:
    """Template-major prompts: [t0(c0), t0(c1), ..., t1(c0), ...] (T * C strings)."""
    if not classnames:
        raise ValueError("no class names given: zero-shot classification needs at least one class")
    if not templates:
        raise ValueError("no templates given: pass at least one, e.g. get_templates('single')")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one '{{}}' for the class name")
    names = prompt_names(classnames)  # "golden_retriever" -> "golden retriever"; duplicates raise
    return [template.format(name) for template in templates for name in names]


@torch.no_grad()
def template_features(model, classnames, templates, batch_size: int = 256):
    """L2-normalised text features of every (template, class) prompt: (T, C, E)."""
    texts = format_prompts(classnames, templates)
    tokens = tokenize_for(model, texts)  # (T * C, context_length); too-long prompts raise, naming the text
    device = model.logit_scale.device
    # encode_text runs each batch only up to its longest EOT, so batching by template keeps lengths close
    features = torch.cat([model.encode_text(chunk.to(device)) for chunk in tokens.split(batch_size)])
    return F.normalize(features, dim=-1).view(len(templates), len(classnames), -1)


def zeroshot_classifier(model, classnames, templates, batch_size: int = 256):
    """Classifier weights (C, E): per class, the mean of its normalised template features, re-normalised."""
    return F.normalize(template_features(model, classnames, templates, batch_size).mean(dim=0), dim=-1)


@torch.no_grad()
def zeroshot_logits(model, images, classifier):
    """exp(logit_scale) * normalised image features @ classifier.T: (N, 3, R, R) -> (N, C)."""
    features = F.normalize(model.encode_image(images), dim=-1)  # (N, E)
    return model.logit_scale.exp() * features @ classifier.t()
