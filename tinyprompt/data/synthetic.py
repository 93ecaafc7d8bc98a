"""The built-in synthetic world: procedural images of coloured shapes, and captions that describe them.

Real CLIP checkpoints and datasets cannot be downloaded everywhere, so tinyprompt ships a small world of
its own in which CLIP-style contrastive pre-training ("Learning Transferable Visual Models From Natural
Language Supervision", Radford et al., arXiv 2103.00020) and the five prompt-learning methods are
meaningful. A scene is a background (a colour and a pattern) with 1-4 objects on it:

    SHAPES     circle square triangle diamond cross ring star heart
    COLOURS    red orange yellow green blue purple white black     (objects and backgrounds; never equal)
    SIZES      small large
    TEXTURES   plain striped dotted                                (how an object is filled)
    PATTERNS   plain striped checkered                             (the background)
    POSITIONS  a 3x3 grid (top left, top, ..., bottom right); a scene of several objects uses the corners

`sample_scenes` draws scene parameters (any attribute of the first object can be fixed per scene),
`render` paints them as uint8 RGB images of any resolution (positions and sizes are fractions of the
side, so a scene looks the same at 24 or 64 pixels), and `describe` writes one caption per scene from
a small template grammar. Like a real caption, it mentions a random subset of what is shown: the shape
(or just "shape"/"object"), and each of size, colour, texture, position and background only sometimes:

    "a small red circle."    "a photo of a striped shape on a plain blue background."
    "a yellow star in the top left."    "an image of a green ring, a heart and a white cross."

Everything is drawn from integer seeds (torch's CPU generator for scenes and pixels, Python's
`random.Random` for the wording), so a seed gives the same images and captions on every run.
The labelled tasks built from this world are in `tinyprompt.data.synthetic_tasks`; the tiny CLIP
pre-trained on it is `tinyprompt.load("synthetic")` with the tokenizer `tokenizer()`.
"""
import hashlib
import math
import random
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

__all__ = [
    "SHAPES", "COLOURS", "SIZES", "TEXTURES", "PATTERNS", "POSITIONS", "Scenes", "derive_seed",
    "sample_scenes", "render", "describe", "tokenizer",
]

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "heart")
COLOURS = {  # name -> RGB; also the background palette
    "red": (215, 40, 40), "orange": (240, 140, 30), "yellow": (235, 215, 50), "green": (45, 165, 70),
    "blue": (45, 85, 215), "purple": (140, 60, 190), "white": (235, 235, 235), "black": (30, 30, 30),
}
SIZES = {"small": (0.15, 0.18), "large": (0.21, 0.24)}  # name -> radius range, as a fraction of the side
TEXTURES = ("plain", "striped", "dotted")
PATTERNS = ("plain", "striped", "checkered")
# name -> (x, y) centre as a fraction of the side (y grows downwards); several objects take the corners
POSITIONS = {
    "top left": (0.28, 0.28), "top": (0.5, 0.28), "top right": (0.72, 0.28),
    "left": (0.28, 0.5), "center": (0.5, 0.5), "right": (0.72, 0.5),
    "bottom left": (0.28, 0.72), "bottom": (0.5, 0.72), "bottom right": (0.72, 0.72),
}
CORNERS = (0, 2, 6, 8)  # indices of the corner positions
MULTI_SCALE = 0.78  # objects of a multi-object scene shrink so that neighbours never touch (0.44 apart, jitter incl.)
_ATTRIBUTES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "texture": TEXTURES,
               "position": tuple(POSITIONS)}
JITTER = 0.03  # centres move up to this fraction of the side off their grid point
TILT = 0.2  # objects turn up to this many radians (a square never becomes a diamond)
NOISE = 4.0  # std of the per-pixel noise, in 0..255 levels
SUPERSAMPLE = 2  # render at 2x and average: smooth edges at 32 px


def derive_seed(*parts) -> int:
    """A 62-bit seed from any values (stable across runs and platforms, unlike hash())."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16) >> 2


@dataclass
class Scenes:
    """N scenes with room for K objects; object attributes are (N, K) long indices into the tables above,
    -1 where a scene has fewer objects. x, y, radius, tilt are (N, K) floats (fractions of the side)."""

    shape: torch.Tensor
    colour: torch.Tensor
    size: torch.Tensor
    texture: torch.Tensor
    position: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    radius: torch.Tensor
    tilt: torch.Tensor
    background: torch.Tensor  # (N,) colour index
    pattern: torch.Tensor  # (N,) index into PATTERNS
    noise_seed: torch.Tensor  # (N,) seed of each image's pixel noise

    def __len__(self) -> int:
        return self.shape.shape[0]

    @property
    def present(self) -> torch.Tensor:  # (N, K) bool: the slot holds an object
        return self.shape >= 0

    def __getitem__(self, index) -> "Scenes":
        """The scenes selected by `index` (a slice, a list or a tensor of indices or a bool mask)."""
        return Scenes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def sample_scenes(n: int, seed: int, objects=(1, 1), fixed: dict | None = None) -> Scenes:
    """Draw n scenes of objects[0]..objects[1] objects (at most 4), uniform over every attribute.

    fixed: attribute name ("shape", "colour", "size", "texture", "position", "background", "pattern")
    -> (n,) long indices; it sets that attribute of the first object (or of the scene). Fixing one
    attribute leaves every other draw unchanged. The objects of one scene sit in distinct corners at
    0.78x their radius (so they never touch); an object's colour always differs from the background.
    """
    low, high = objects
    if not 1 <= low <= high <= len(CORNERS):
        raise ValueError(f"objects must be (low, high) with 1 <= low <= high <= {len(CORNERS)}, got {objects}")
    fixed = dict(fixed or {})
    fixable = [*_ATTRIBUTES, "background", "pattern"]
    if set(fixed) - set(fixable):
        raise ValueError(f"cannot fix {sorted(set(fixed) - set(fixable))}: fixable attributes are {fixable}")
    if "position" in fixed and high > 1:
        raise ValueError("a position can be fixed only in scenes of one object (several objects take the corners)")
    g = torch.Generator().manual_seed(seed)
    tables = {**_ATTRIBUTES, "background": tuple(COLOURS), "pattern": PATTERNS}

    def draw(name, shape):  # always drawn, so that fixing an attribute never shifts the other draws
        value = torch.randint(len(tables[name]), shape, generator=g)
        if name not in fixed:
            return value
        given = torch.as_tensor(fixed[name], dtype=torch.long)
        if given.shape != (n,) or (n and (given.min() < 0 or given.max() >= len(tables[name]))):
            raise ValueError(f"fixed[{name!r}] must be {n} indices in 0..{len(tables[name]) - 1} "
                             f"({', '.join(tables[name])}), got shape {tuple(given.shape)}")
        if value.dim() == 1:
            return given.clone()
        value[:, 0] = given
        return value

    background, pattern = draw("background", (n,)), draw("pattern", (n,))
    attrs = {name: draw(name, (n, high)) for name in _ATTRIBUTES}  # (n, K) each
    present = torch.arange(high) < torch.randint(low, high + 1, (n, 1), generator=g)  # (n, K)
    clash = attrs["colour"] == background[:, None]
    if "colour" in fixed and bool(clash[:, 0].any()):
        raise ValueError("fixed['colour'] equals the background colour in some scenes: an object never has the "
                         "background's colour; fix 'background' too, to a different colour")
    attrs["colour"] = torch.where(clash, (attrs["colour"] + 1) % len(COLOURS), attrs["colour"])  # next colour
    shuffled = torch.rand(n, len(CORNERS), generator=g).argsort(dim=1)[:, :high]  # distinct corners per scene
    if high > 1:
        attrs["position"] = torch.tensor(CORNERS)[shuffled]
    centre = torch.tensor(list(POSITIONS.values()))[attrs["position"]]  # (n, K, 2)
    centre = centre + (torch.rand(n, high, 2, generator=g) * 2 - 1) * JITTER
    low_r, high_r = torch.tensor(list(SIZES.values())).T  # (sizes,) each
    t = torch.rand(n, high, generator=g)
    radius = (low_r[attrs["size"]] + t * (high_r - low_r)[attrs["size"]]) * (MULTI_SCALE if high > 1 else 1.0)
    tilt = (torch.rand(n, high, generator=g) * 2 - 1) * TILT
    noise_seed = torch.randint(2**62, (n,), generator=g)
    attrs = {name: value.masked_fill(~present, -1) for name, value in attrs.items()}
    return Scenes(**attrs, x=centre[..., 0], y=centre[..., 1], radius=radius, tilt=tilt, background=background,
                  pattern=pattern, noise_seed=noise_seed)


# ---------------------------------------------------------------------------------------------- pixels

def _shape_mask(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test of SHAPES[shape] at object coordinates (u, v) in units of its radius (v points down)."""
    au, av, rho = u.abs(), v.abs(), torch.hypot(u, v)
    name = SHAPES[shape]
    if name == "circle":
        return rho <= 1
    if name == "square":
        return torch.maximum(au, av) <= 0.85
    if name == "triangle":  # apex up, inscribed in the unit circle
        return (v <= 0.5) & (au * math.sqrt(3) <= v + 1)
    if name == "diamond":
        return au + av <= 1
    if name == "cross":
        return (torch.minimum(au, av) <= 0.3) & (torch.maximum(au, av) <= 1)
    if name == "ring":
        return (rho <= 1) & (rho >= 0.55)
    if name == "star":  # five points at radius 1, valleys at radius 0.45, a point up
        inner, half = 0.45, math.pi / 5
        a = ((torch.atan2(u, -v) + half) % (2 * half) - half).abs()  # angle from the nearest point
        edge = inner * math.sin(half) / (torch.cos(a) * inner * math.sin(half) - torch.sin(a) * (inner * math.cos(half) - 1))
        return rho <= edge
    x, y = u * 1.15, 0.2 - v * 1.15  # heart: (x^2 + y^2 - 1)^3 <= x^2 y^3, lobes up
    return (x * x + y * y - 1) ** 3 <= x * x * y**3


def _shade(rgb: torch.Tensor) -> torch.Tensor:
    """The second tone of a texture or pattern: the colour moved 45% of the way to mid grey."""
    return rgb * 0.55 + 128 * 0.45


def render(scenes: Scenes, resolution: int = 32) -> torch.Tensor:
    """The scenes as uint8 RGB images (N, 3, R, R): background, objects in slot order, pixel noise."""
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 pixels, got {resolution}")
    n, s = len(scenes), resolution * SUPERSAMPLE
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)  # (colours, 3)
    grid = (torch.arange(s, dtype=torch.float32) + 0.5) / s  # pixel centres in [0, 1]
    py, px = grid[:, None].expand(s, s), grid[None, :].expand(s, s)  # (S, S) each
    # background: plain, horizontal stripes (8 per side) or a 4x4 checkerboard
    bg = palette[scenes.background][:, :, None, None]  # (N, 3, 1, 1)
    stripes = (py * 8).floor() % 2 == 1
    checks = ((py * 4).floor() + (px * 4).floor()) % 2 == 1
    second = torch.stack([torch.zeros_like(stripes), stripes, checks])[scenes.pattern]  # (N, S, S)
    image = torch.where(second[:, None], _shade(bg), bg)  # (N, 3, S, S)
    # object fills: diagonal stripes (10 per side) or a lattice of dots, in the object's second tone
    fills = torch.stack([
        torch.zeros_like(stripes),
        ((px + py) * 10).floor() % 2 == 1,
        torch.hypot((px * 10) % 1 - 0.5, (py * 10) % 1 - 0.5) < 0.3,
    ])  # fmt: skip
    for k in range(scenes.shape.shape[1]):
        shape = scenes.shape[:, k]
        for index in shape.unique().tolist():
            if index < 0:
                continue
            rows = (shape == index).nonzero().squeeze(1)  # the scenes whose slot k holds this shape
            cos, sin = torch.cos(scenes.tilt[rows, k]), torch.sin(scenes.tilt[rows, k])
            dx, dy = px - scenes.x[rows, k, None, None], py - scenes.y[rows, k, None, None]  # (M, S, S)
            r = scenes.radius[rows, k, None, None]
            u = (cos[:, None, None] * dx + sin[:, None, None] * dy) / r
            v = (-sin[:, None, None] * dx + cos[:, None, None] * dy) / r
            inside = _shape_mask(index, u, v)[:, None]  # (M, 1, S, S)
            rgb = palette[scenes.colour[rows, k]][:, :, None, None]  # (M, 3, 1, 1)
            fill = torch.where(fills[scenes.texture[rows, k]][:, None], _shade(rgb), rgb)
            image[rows] = torch.where(inside, fill, image[rows])
    image = F.avg_pool2d(image, SUPERSAMPLE)  # (N, 3, R, R): anti-aliased edges
    noise = torch.stack([torch.randn(3, resolution, resolution, generator=torch.Generator().manual_seed(int(seed)))
                         for seed in scenes.noise_seed]) if n else image  # fmt: skip
    return (image + NOISE * noise).round().clamp(0, 255).to(torch.uint8)


# -------------------------------------------------------------------------------------------- captions

# how often a caption mentions each attribute of an object (the shape noun: else "shape" or "object"),
# its position, and the background (then its colour and pattern)
MENTION = {"shape": 0.9, "size": 0.4, "colour": 0.5, "texture": 0.3, "position": 0.3, "background": 0.4,
           "background colour": 0.7, "background pattern": 0.5}
PREFIXES = ("", "", "a photo of ", "an image of ", "a picture of ")
_WHERE = {"top left": "in the top left", "top": "at the top", "top right": "in the top right", "left": "on the left",
          "center": "in the center", "right": "on the right", "bottom left": "in the bottom left",
          "bottom": "at the bottom", "bottom right": "in the bottom right"}


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _object_phrase(scenes: Scenes, i: int, k: int, rng: random.Random, alone: bool) -> str:
    """"a small red circle in the top left": an article, some adjectives, a noun, maybe a position."""
    words = [table[int(getattr(scenes, name)[i, k])] for name, table in
             (("size", tuple(SIZES)), ("colour", tuple(COLOURS)), ("texture", TEXTURES))
             if rng.random() < MENTION[name]]  # fmt: skip
    words.append(SHAPES[int(scenes.shape[i, k])] if rng.random() < MENTION["shape"] else rng.choice(("shape", "object")))
    phrase = _a(" ".join(words))
    if rng.random() < MENTION["position"] * (1.0 if alone else 0.5):
        phrase += " " + _WHERE[tuple(POSITIONS)[int(scenes.position[i, k])]]
    return phrase


def _background_phrase(scenes: Scenes, i: int, rng: random.Random) -> str:
    """"on a striped blue background" (the colour, the pattern or both)."""
    colour = rng.random() < MENTION["background colour"]
    words = [PATTERNS[int(scenes.pattern[i])]] if rng.random() < MENTION["background pattern"] or not colour else []
    words += [tuple(COLOURS)[int(scenes.background[i])]] if colour else []
    return " on " + _a(" ".join(words + ["background"]))


def describe(scenes: Scenes, seed: int = 0) -> list:
    """One caption per scene. Scene i's wording depends only on (scene i, seed): another seed gives
    another caption of the same image ("a red circle." / "a photo of a small circle on a blue background.")."""
    captions = []
    for i in range(len(scenes)):
        rng = random.Random(derive_seed(int(scenes.noise_seed[i]), seed))
        slots = scenes.present[i].nonzero().squeeze(1).tolist()
        objects = [_object_phrase(scenes, i, k, rng, alone=len(slots) == 1) for k in slots]
        listed = objects[0] if len(objects) == 1 else ", ".join(objects[:-1]) + " and " + objects[-1]
        background = _background_phrase(scenes, i, rng) if rng.random() < MENTION["background"] else ""
        captions.append(rng.choice(PREFIXES) + listed + background + ".")
    return captions


def tokenizer():
    """The tokenizer of the tiny CLIP pre-trained on this world (`tinyprompt.load("synthetic")`): a
    `SimpleTokenizer` over the packaged merges file, sha256-verified; use it as
    `tinyprompt.tokenize(texts, context_length=32, tokenizer=tokenizer())`."""
    from tinyprompt.hub import builtin_file
    from tinyprompt.tokenizer import get_tokenizer

    return get_tokenizer(builtin_file("synthetic", "bpe"))
