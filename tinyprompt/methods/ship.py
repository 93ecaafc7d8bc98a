"""SHIP: synthesised prompts. A VAE whose decoder writes part of a prompt, so that CLIP's text encoder can
produce image-like features for classes that have only a name; CoOp is then trained on real + synthetic.

Paper: "Improving Zero-Shot Generalization for CLIP with Synthesized Prompts", Wang, Liang, He, Tan
(ICCV 2023, arXiv 2307.07397). Reference code: mrflogs/SHIP `main_coop_vae.py` (10 datasets) and
`main_imagenet_coop_vae.py` (ImageNet).

Stage 1, the generator, on L2-normalised image features x (dim D) of labelled base classes y:

    h = ReLU(W1 x + b1);  mu = W_mu h + b_mu;  logvar = W_v h + b_v        encoder E (ignores y: quirk 1)
    z = mu + exp(logvar / 2) * eps,   eps ~ N(0, I)                         latent dim = D
    r = V2 act(V1 z + c1) + c2                                             decoder G -> text width W
    prompt = [SOS][ctx_1 + r ... ctx_4 + r][name_y][.][EOT]                one bias on all 4 tokens
    x_hat = normalise(TextEncoder(prompt))                                  frozen CLIP text tower
    loss = mean_i |x_hat_i - x_i|^2 + mean_i KL(N(mu_i, sigma_i^2) || N(0, I))   (= mean(2 - 2 cos) + KL)

E, G and the 4 global context vectors are trained (`SHIPGenerator.forward` returns the loss and its parts).
Stage 2: a name-only class c gets synthetic features normalise(TextEncoder(prompt(G(z), c))) with
z ~ N(0, I); CoOp (context from "a photo of a") is trained over base + new classes on batches that pair
every real base feature with one synthetic feature of a uniformly drawn new class, logits 100 · cos,
cross-entropy (`finetune_loss` = `coop_loss` of `mix_synthetic`).

Protocol (CoCoOp's base-to-new, arXiv 2203.05557): the first ceil(n/2) sorted labels are base, the rest
new (`split_base_new`); base accuracy over the base columns only, new accuracy over the new columns only,
and their harmonic mean (`base_new_accuracy`). The official script picks its reported numbers by the best
H on the TEST sets; tinyprompt's recipe selects on a validation split instead.

Image features enter every function here L2-normalised, once, by the caller (the official code normalises
right after encode_image; normalising again would change the last bits). Prompts are encoded by
`tinyprompt.prompts.ClassPrompts` with per-row contexts, EOT-truncated (exact;
`full_length=True` runs all 77 positions like the official code, for comparisons).
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinyprompt.methods.saved import SavedPrompt
from tinyprompt.metrics import accuracy, harmonic_mean
from tinyprompt.prompts import ClassPrompts, check_encoding, random_context

__all__ = ["SHIP", "SHIPConfig", "SHIPGenerator", "VARIANTS", "LOGIT_SCALE", "split_base_new", "relabel", "ship_logits",
           "mix_synthetic", "coop_loss", "finetune_loss", "base_new_accuracy"]

LOGIT_SCALE = 100.0  # the fine-tune's fixed logit scale (not CLIP's learned logit_scale)
# the two official scripts (README quirk 13): encoder hidden width as a multiple of the image-feature dim D
# (2048 / 4096 at D = 512), and the decoder's activation (None = ReLU, else LeakyReLU's negative slope)
VARIANTS = {
    "default": {"enc_ratio": 4, "leaky_slope": None},  # main_coop_vae.py: the 10 datasets
    "imagenet": {"enc_ratio": 8, "leaky_slope": 0.2},  # main_imagenet_coop_vae.py
}
GEN_RATIO = 8  # decoder hidden width = 8 D (4096 at D = 512) in both scripts
# config fields that only change how prompts are encoded, never the numbers
ENCODING_FIELDS = ("text_chunk", "checkpoint", "full_length")


@dataclass
class SHIPConfig:
    variant: str = "default"  # "default" (10 datasets: ReLU decoder) | "imagenet" (wider encoder, LeakyReLU 0.2)
    n_ctx: int = 4  # global context vectors of the generator's prompt (official: 4)
    enc_hidden: int = 0  # encoder hidden width; 0 = the variant's official size (4 D, ImageNet 8 D)
    gen_hidden: int = 0  # decoder hidden width; 0 = the official 8 D
    kl_weight: float = 1.0  # weight of the KL term (official: 1, no annealing)
    init_std: float = 0.02  # N(0, std^2) for the context and the Linear weights, zero biases (official init)
    text_chunk: int | str = 0  # prompts per text-encoder pass (0 = all at once); bounds memory for big batches
    checkpoint: bool | str = False  # recompute each chunk's activations in backward: less memory, more compute
    full_length: bool = False  # run all 77 positions, as the official code (for comparisons)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"SHIPConfig.variant = {self.variant!r}: use one of {tuple(VARIANTS)}")
        for name, low in (("n_ctx", 1), ("enc_hidden", 0), ("gen_hidden", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"SHIPConfig.{name} = {value!r}: use an int >= {low}")
        check_encoding(self)
        if self.kl_weight < 0:
            raise ValueError(f"SHIPConfig.kl_weight = {self.kl_weight!r}: use a value >= 0")
        if self.init_std <= 0:
            raise ValueError(f"SHIPConfig.init_std = {self.init_std!r}: use a value > 0")


class Encoder(nn.Module):
    """E: feature (D) -> hidden -> ReLU -> (mu, logvar), both (latent); the official module's names."""

    def __init__(self, dim: int, hidden: int, latent: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent)
        self.log_var = nn.Linear(hidden, latent)

    def forward(self, x):  # (B, D) -> (B, latent), (B, latent)
        h = self.net(x)
        return self.mean(h), self.log_var(h)


class Decoder(nn.Module):
    """G: latent -> hidden -> ReLU / LeakyReLU -> text width: the bias r added to every context vector."""

    def __init__(self, latent: int, hidden: int, width: int, leaky_slope: float | None):
        super().__init__()
        act = nn.ReLU() if leaky_slope is None else nn.LeakyReLU(leaky_slope)
        self.net = nn.Sequential(nn.Linear(latent, hidden), act, nn.Linear(hidden, width))

    def forward(self, z):  # (B, latent) -> (B, W)
        return self.net(z)


class SHIPGenerator(SavedPrompt, nn.Module):
    """The SHIP CVAE around a frozen CLIP: encoder, decoder and context `ctx` (n_ctx, W) are learned.

    `classnames` is the label space of `forward` (base classes) and `synthesize` (any class, e.g. the
    new ones): build it over base + new and train with base labels only (a class's prompt does not
    depend on the other classes, so this equals the official rebuilding of the tables per class list).
    """

    CONFIG, OVERRIDABLE = SHIPConfig, ENCODING_FIELDS  # for from_prompt_state_dict

    def __init__(self, clip_model, classnames, config: SHIPConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else SHIPConfig()
        self.clip = clip_model.eval().requires_grad_(False)
        self.classnames = list(classnames)
        dim, width = clip_model.embed_dim, clip_model.text_width
        self.latent_dim = dim  # the official code draws z with image_features.shape[1] columns
        variant = VARIANTS[config.variant]
        self.encoder = Encoder(dim, config.enc_hidden or variant["enc_ratio"] * dim, self.latent_dim)
        self.decoder = Decoder(self.latent_dim, config.gen_hidden or GEN_RATIO * dim, width, variant["leaky_slope"])
        for layer in [*self.encoder.modules(), *self.decoder.modules()]:
            if isinstance(layer, nn.Linear):  # the official weights_init (CLIP's own layers are left alone)
                nn.init.normal_(layer.weight, std=config.init_std)
                nn.init.zeros_(layer.bias)
        device = clip_model.token_embedding.weight.device
        self.ctx = nn.Parameter(random_context(config.n_ctx, width, std=config.init_std).to(device))
        self.prompts = ClassPrompts(clip_model, self.classnames, config.n_ctx, text_chunk=config.text_chunk,
                                    checkpoint=config.checkpoint, share_prefix=False,
                                    full_length=config.full_length)  # fmt: skip  # "X X X X {name}."
        self.to(device)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen backbone
        return self

    def encode(self, bias: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features (B, D) of the prompts [SOS][ctx + bias_i][name_{labels_i}][.][EOT]."""
        ctx = self.ctx[None] + bias[:, None]  # (B, n_ctx, W): the same bias on every context vector (quirk 3)
        return self.prompts.encode(self.clip, ctx, labels)

    def forward(self, image_features: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor | None = None) -> dict:
        """One CVAE pass over L2-normalised image features (B, D) of classes `labels` (B,); eps (B, D) fixes
        the noise. Normalise once before (f / f.norm(dim=-1, keepdim=True), as the official code does
        after encode_image): normalising twice changes the last bits.

        Returns mu, logvar, std, z, bias (B, W), raw_features and features (the normalised
        reconstruction), loss_recon, loss_kl and loss = loss_recon + kl_weight · loss_kl.
        """
        x = image_features
        norms = x.detach().norm(dim=-1)
        # a bool read from the device: a compiled step skips the check (it would split the graph), eager keeps it
        if not torch.compiler.is_compiling() and not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
            raise ValueError(f"SHIPGenerator needs L2-normalised image features, got norms from {norms.min():.4g} to "
                             f"{norms.max():.4g}: pass f / f.norm(dim=-1, keepdim=True)")
        mu, logvar = self.encoder(x)  # (B, D) each; the label is not an input (quirk 1)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std) if eps is None else eps
        z = std * eps + mu  # reparameterisation
        bias = self.decoder(z)  # (B, W)
        raw = self.encode(bias, labels)  # (B, D)
        features = raw / raw.norm(dim=-1, keepdim=True)
        loss_recon = (features - x).pow(2).sum(dim=1).mean()  # summed over dims, mean over batch (quirk 4)
        loss_kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()  # summed over latent dims
        loss = loss_recon + self.config.kl_weight * loss_kl
        return {"mu": mu, "logvar": logvar, "std": std, "z": z, "bias": bias, "raw_features": raw,
                "features": features, "loss_recon": loss_recon, "loss_kl": loss_kl, "loss": loss}  # fmt: skip

    @torch.no_grad()
    def synthesize(self, labels: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm synthetic features (B, D) of classes `labels` from the prior z ~ N(0, I) (or the given z)."""
        if z is None:
            z = torch.randn(labels.shape[0], self.latent_dim, device=self.ctx.device, dtype=self.ctx.dtype)
        raw = self.encode(self.decoder(z), labels)
        return raw / raw.norm(dim=-1, keepdim=True)

    # ---- saving: the learned tensors plus what is needed to rebuild the generator ----
    def prompt_state_dict(self) -> dict:
        def cpu(module):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

        return {"method": "ship", "config": asdict(self.config), "classnames": list(self.classnames),
                "encoder": cpu(self.encoder), "decoder": cpu(self.decoder), "ctx": self.ctx.detach().cpu().clone()}  # fmt: skip

    def load_prompt_state_dict(self, state: dict) -> None:
        """Load a saved generator (any class list: the learned tensors do not depend on it)."""
        if state.get("method") != "ship":
            raise ValueError(f"this state was saved by {state.get('method')!r}, not SHIP: load it with that method")
        saved = {k: v for k, v in state["config"].items() if k not in ENCODING_FIELDS}
        mine = {k: v for k, v in asdict(self.config).items() if k not in ENCODING_FIELDS}
        if saved != mine:
            diff = {k: (saved.get(k), mine.get(k)) for k in set(saved) | set(mine) if saved.get(k) != mine.get(k)}
            raise ValueError(f"the saved generator's config differs from this one's (saved, this): {diff}; build the "
                             f"generator with the saved config (SHIPGenerator.from_prompt_state_dict)")
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
        with torch.no_grad():
            self.ctx.copy_(state["ctx"])


# ---- the base-to-new protocol ----
SHIP = SHIPGenerator  # the method's name in `tinyprompt.methods`: SHIP's learned module is its generator


def split_base_new(train_labels) -> tuple[list[int], list[int]]:
    """(base, new) original labels: of the labels present in the train list, sorted, the first ceil(n/2)
    are base and the rest new (OxfordPets.subsample_classes; an odd n gives base the extra class).

    Only the train list counts (quirk 10): a class without training images leaves both groups. As in the
    official rule, one class gives base [it] and no new classes; the caller decides whether it can run without.
    """
    labels = sorted(set(int(label) for label in train_labels))
    if not labels:
        raise ValueError("a base-to-new split needs at least 1 class in the train list, got none")
    m = (len(labels) + 1) // 2  # ceil(n / 2)
    return labels[:m], labels[m:]


def relabel(items, labels) -> list:
    """The items whose label is in `labels`, relabelled 0..len(labels)-1 in the order of `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    return [item._replace(label=index[item.label]) for item in items if item.label in index]


def ship_logits(features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(B, C) = 100 · features @ normalise(text_features)ᵀ: SHIP's fixed-scale cosine logits.

    features (B, D) are L2-normalised image (or synthetic) features; text_features (C, D) any scale.
    """
    text = text_features / text_features.norm(dim=-1, keepdim=True)
    return LOGIT_SCALE * features @ text.t().to(features.dtype)


def mix_synthetic(generator: SHIPGenerator, features: torch.Tensor, labels: torch.Tensor, n_base: int,
                  syn_labels: torch.Tensor | None = None, z: torch.Tensor | None = None):  # fmt: skip
    """The fine-tune batch: real L2-normalised base features (B, D) first, then one synthetic feature per row.

    syn_labels (B,) default: uniform over the generator's classes n_base..n_cls-1 (the new ones); z default
    N(0, I). Returns (features (2B, D), labels (2B,)); the synthetic part carries no gradient.
    """
    if syn_labels is None:
        syn_labels = torch.randint(n_base, len(generator.classnames), (labels.shape[0],), device=labels.device)
    fake = generator.synthesize(syn_labels, z).to(features.dtype)
    return torch.cat([features, fake]), torch.cat([labels, syn_labels.to(labels.dtype)])


def coop_loss(coop, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of 100 · cos(features, CoOp's text features of all its classes) against labels."""
    return F.cross_entropy(ship_logits(features, coop.text_features()), labels)


def finetune_loss(coop, generator: SHIPGenerator, features: torch.Tensor, labels: torch.Tensor, n_base: int,
                  syn_labels: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Stage 2's training step: CoOp over base + new classes on real base features (B, D) with labels (B,), each
    paired with one synthetic new-class feature (`mix_synthetic`; syn_labels, z as there), loss `coop_loss`
    on the (2B, D) batch. Only CoOp's context gets a gradient: the generator is frozen here."""
    return coop_loss(coop, *mix_synthetic(generator, features, labels, n_base, syn_labels, z))


@torch.no_grad()
def base_new_accuracy(text_features: torch.Tensor, n_base: int, base_features: torch.Tensor, base_labels,
                      new_features: torch.Tensor, new_labels) -> dict:  # fmt: skip
    """{"base", "new", "H"} in percent: L2-normalised base features (labels 0..n_base-1) scored against the base columns
    of text_features (C, D) only, new features (labels 0-based within new) against the new columns only.

    H is 0 when both accuracies are 0 (the official code divides by zero there).
    """
    device = text_features.device
    base = accuracy(ship_logits(base_features.to(device), text_features[:n_base]),
                    torch.as_tensor(base_labels, device=device))[0]  # fmt: skip
    new = accuracy(ship_logits(new_features.to(device), text_features[n_base:]),
                   torch.as_tensor(new_labels, device=device))[0]  # fmt: skip
    return {"base": base, "new": new, "H": harmonic_mean(base, new)}
