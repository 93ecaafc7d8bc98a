"""Suite `text`: CLIP text encoding, EOT-truncated vs all 77 positions (`python -m bench text`).

CLIP's text transformer is causal and pools at the EOT token (Radford et al., "Learning Transferable
Visual Models From Natural Language Supervision", arXiv 2103.00020), so positions after the last EOT
of a batch never reach the result: `CLIP.encode_text` runs only up to it (`full_length=True` runs all
77). Workload: 1,000 ImageNet-style zero-shot prompts "a photo of a {name}." (names made up from a
fixed word list, 1-3 words, so their BPE lengths look like ImageNet's), a full-size ViT-B/16 text
tower (width 512, 8 heads, 12 layers, context 77, vocab 49408, embed 512) with random weights, fp32,
no grad, encoded in batches of `--batch`. Both ways run interleaved in one process; outputs are
compared; peak extra memory comes from a fresh process per provider (`harness.peak_memory`).
"""
import random

import torch
import torch.nn.functional as F

from bench import harness
from tinyprompt.clip import CLIP, eot_index

# OpenAI's CLIP(...) positional arguments of the full-size backbones the suites build with random weights (the
# ViT-B/16 and RN50 checkpoints' shapes, as build_model infers them)
VIT_B16 = (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12)
RN50 = (1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12)
PROVIDERS = {"eot_truncated": False, "full_77": True}  # name -> full_length

_MODIFIERS = (
    "American Egyptian Siberian Persian Japanese African Indian Arctic Irish Scottish Tibetan Mexican "
    "great little giant common spotted striped golden silver black white red grey green blue brown "
    "lesser crested horned long-tailed ruffed sea water wild garden"
).split()
_NOUNS = (
    "shark ray cock hen finch junco bunting robin bulbul jay magpie chickadee kite vulture owl salamander "
    "newt frog turtle terrapin gecko iguana lizard chameleon alligator triceratops snake python viper "
    "scorpion spider tick centipede grouse peacock quail partridge parrot macaw cockatoo toucan hornbill "
    "hummingbird duck goose swan tusker echidna platypus jellyfish anemone coral flatworm nematode conch "
    "snail slug chiton lobster crab crayfish isopod stork spoonbill flamingo heron egret bittern crane "
    "limpkin gallinule coot bustard turnstone sandpiper redshank dowitcher oystercatcher pelican penguin "
    "albatross whale dugong sea lion retriever terrier spaniel setter pointer sheepdog mastiff poodle "
    "kettle teapot wok scooter canoe toaster umbrella violin warplane wardrobe yawl"
).split()


def class_names(n: int, seed: int = 0) -> list:
    """n distinct made-up class names of 1-3 words (15% / 60% / 25%), deterministic."""
    rng, names = random.Random(seed), {}
    while len(names) < n:
        words = rng.choices(_MODIFIERS, k=rng.choices((0, 1, 2), weights=(15, 60, 25))[0]) + [rng.choice(_NOUNS)]
        names.setdefault(" ".join(words), None)
    return list(names)


def prompt_tokens(n: int, seed: int = 0) -> tuple:
    """(tokens (n, 77), source): real BPE ids when the tokenizer finds its merges file, else synthetic
    rows of realistic length (SOT, 6-12 content ids, EOT, zeros)."""
    prompts = [f"a photo of a {name}." for name in class_names(n, seed)]
    try:
        from tinyprompt.tokenizer import tokenize

        return tokenize(prompts), "bpe"
    except (ImportError, OSError) as err:  # no merges file here (FileNotFoundError) or no tokenizer
        print(f"(tokenizer unavailable: {str(err).splitlines()[0]}; using synthetic token rows)")
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, 77, dtype=torch.long)
    for row, content in zip(tokens, torch.randint(6, 13, (n,), generator=g).tolist()):
        row[0], row[1 : content + 1], row[content + 1] = 49406, torch.randint(1, 49406, (content,), generator=g), 49407
    return tokens, "synthetic"


def text_tower(device: str = "cpu", seed: int = 0, width: int = 512) -> CLIP:
    """ViT-B/16 with random weights (OpenAI's initialisation: realistic scale); `width` < 512 narrows the text tower
    (heads of 64, as OpenAI's), same depth and code path: the same ops, for counting them cheaply."""
    torch.manual_seed(seed)
    config = list(VIT_B16)
    config[7], config[8] = width, max(1, width // 64)  # transformer_width, transformer_heads
    return CLIP(*config).to(device).eval()


def encode_all(model, tokens, batch: int, full_length: bool):
    """Features (N, E) of all prompts, `batch` prompts per encode_text call."""
    with torch.no_grad():
        return torch.cat([model.encode_text(chunk, full_length=full_length) for chunk in tokens.split(batch)])


def factory(prompts: int, batch: int, full_length: bool, device: str = "cpu", seed: int = 0):
    """One unit of work for `harness.peak_memory`: encode all prompts one way."""
    model, tokens = text_tower(device, seed), prompt_tokens(prompts, seed)[0].to(device)
    return lambda: encode_all(model, tokens, batch, full_length)


def add_args(parser):
    parser.add_argument("--prompts", type=int, default=None, help="number of class prompts (default: 1000; --quick 64)")
    parser.add_argument("--batch", type=int, default=None, help="prompts per encode_text call (default: all at once)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per provider (default: 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs (default: off)")


def run(args):
    prompts = args.prompts or (64 if args.quick else 1000)
    batch = args.batch or prompts
    reps = args.reps or 3
    model, (tokens, source) = text_tower(args.device), prompt_tokens(prompts)
    tokens = tokens.to(args.device)
    lengths = eot_index(tokens) + 1
    positions = [int(lengths[i : i + batch].max()) for i in range(0, prompts, batch)]
    print(f"{prompts} prompts ({source} tokens), lengths min/median/max {int(lengths.min())}/"
          f"{int(lengths.median())}/{int(lengths.max())}; positions run per batch: {positions}")  # fmt: skip

    outputs = {name: encode_all(model, tokens, batch, full) for name, full in PROVIDERS.items()}  # also the warm-up
    max_abs_diff = (outputs["eot_truncated"] - outputs["full_77"]).abs().max().item()
    scale = outputs["full_77"].abs().max().item()
    unit = {name: F.normalize(out, dim=-1) for name, out in outputs.items()}  # what logits see
    max_abs_diff_normalized = (unit["eot_truncated"] - unit["full_77"]).abs().max().item()
    fns = {name: (lambda full=full: encode_all(model, tokens, batch, full)) for name, full in PROVIDERS.items()}
    times = {name: harness.summarize(t) for name, t in harness.time_interleaved(fns, args.device, 0, reps).items()}

    report = harness.Report("text", args.device, args.out)
    shape = f"{prompts}x77 tokens, batch {batch}, ViT-B/16 text tower"
    for name, full in PROVIDERS.items():
        kwargs = {"prompts": prompts, "batch": batch, "full_length": full, "device": args.device}
        memory = None if args.no_memory else harness.peak_memory("bench.clip_text:factory", kwargs, args.device)
        report.add(
            provider=name, shape=shape, dtype="float32", tokens=source,
            positions=77 if full else max(positions), **times[name],
            prompts_per_s=prompts / times[name]["median_s"],
            speedup=times["full_77"]["median_s"] / times[name]["median_s"],
            max_abs_diff=max_abs_diff, max_abs_feature=scale, max_abs_diff_normalized=max_abs_diff_normalized,
            peak_extra_mib=None if memory is None else memory / 2**20,
        )  # fmt: skip
    columns = ["provider", "shape", "tokens", "positions", "median_s", "p20_s", "p80_s", "prompts_per_s",
               "speedup", "max_abs_diff", "max_abs_diff_normalized", "peak_extra_mib"]  # fmt: skip
    report.write(columns, title="CLIP text encoding: EOT-truncated vs full 77 positions")
    report.plot("shape", "median_s", "provider", "seconds (median)")
    return 0
