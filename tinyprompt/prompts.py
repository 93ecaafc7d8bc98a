"""Shared prompt machinery: learned context vectors spliced into class-name prompts, encoded by CLIP.

CoOp ("Learning to Prompt for Vision-Language Models", Zhou et al., arXiv 2109.01134) introduced the
prompt every method here reuses (TaI-DPT, SHIP and POMP build on the same learner):

    prompt_c = [SOS] [ctx_1 ... ctx_M] [name_c tokens] [.] [EOT]      (class token at the "end")

where the ctx vectors are learned in the text encoder's input space and everything else is the frozen
token embedding of the sentence "X X ... X name_c." (M placeholders). The class tokens can also sit in
the "middle" (between the two halves of the context) or at the "front" (right after SOS). The text
feature of class c is CLIP's text transformer on prompt_c, pooled at the EOT position.

This file has the pieces, with no method-specific parameters (methods own their ctx tensors):
- `prompt_names`: class names as every prompt spells them, refusing two classes whose prompts would be
  the same (the prediction between identical prompts is arbitrary); zero-shot classifiers use it too;
- `random_context` / `context_from_words`: CoOp's two initialisations (with its word-count quirk);
- `ClassPrompts`: the token ids of the class sentences (non-persistent integer buffers), the assembly
  of prompts for any subset of classes with a shared context (CoOp, TaI-DPT's two contexts, POMP) or
  one context per row (class-specific CoOp, SHIP's per-sample bias), and their encoding. `concatenate`
  is CoOp's assembly as written, one torch.cat per prompt (the reference); `assemble` is the same
  prompts, bit for bit, from one gather per chunk (the fast path every method uses).

No table of token embeddings is held: the frozen `clip.token_embedding` is looked up on the ids of the
rows being assembled, one chunk at a time (a lookup copies rows, so the prompts are the same bits). A
table of all classes, (n_cls, L, width) fp32, grew with the label space although a step encodes only
its own ~1,000 rows: 551 MiB for POMP's 10,450 names at width 512 (L = 27), 1.1 GiB for ImageNet-21K's
21,843. The buffers are now integers, O(n_cls * L): 1.2 MiB at 10,450 names.

Encoding is exact and cheaper than the official code, which runs all 77 positions of every prompt:
- EOT truncation: the transformer is causal and pools at the EOT, so positions after the longest EOT
  of a pass never matter; chunks take the rows sorted by length, so a row is padded only up to its
  neighbours in length;
- shared prefix: with a shared context and the class token at the end (or middle), positions
  0..P-1 (SOS + context) are identical in every prompt, and so (causal mask) are their hidden states:
  CLIP's `text_prefix` computes their keys and values once per `encode` call (one row) and every row
  of every chunk attends to them (`encode_text_after_prefix`);
- chunks (ceil(R / text_chunk) passes of equal size, optionally activation-checkpointed) bound memory
  for thousands of classes; `text_chunk=0` encodes all rows in one padded pass. Fewer passes mean
  fewer kernel launches (what a GPU step is bound by), smaller ones less padding and cache traffic (what
  a CPU step is bound by): `python -m bench pomp` measures both sides;
- duplicate class indices under a shared context are encoded once (autograd sums the copies' grads).
The three knobs (`text_chunk`, `checkpoint`, `share_prefix`) also take "auto", resolved on the device each
pass runs on (`AUTO_ENCODING`): the same function either way, only the order of the arithmetic differs.
A pass of all classes knows its longest prompt on the host (computed once, like the token ids) and indexes
nothing; a subset reads its rows' longest EOT back from the device (a sync), except under torch.compile, where a
pass runs to the longest prompt of all classes (a static shape, exact by causality): the read would break the graph.
"""
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tinyprompt.clip import eot_index as first_eot
from tinyprompt.tokenizer import clean, model_tokenizer, tokenize_for

__all__ = ["AUTO", "AUTO_ENCODING", "POSITIONS", "ClassPrompts", "check_encoding", "context_from_words", "prompt_names",
           "random_context"]

POSITIONS = ("end", "middle", "front")  # where the class-name tokens go relative to the context
AUTO = "auto"  # an encoding knob chosen by the device the prompts are encoded on
# What "auto" means. A CPU pass is bound by arithmetic and cache traffic: chunks of 256 length-sorted prompts
# (little padding), each recomputed in backward (memory of one chunk), the shared SOS + context prefix encoded
# once. A CUDA step of ~1,000 short prompts is bound by kernel launches: one pass, nothing recomputed, and no
# separate prefix pass (its 12 blocks forward and backward would double the launches): no more ops than the
# official formulation (POMP at K 1000, counted on CPU: 1,009 vs 1,013; every method: tests/test_opcount.py), on a
# third of its positions (`python -m bench pomp` counts and times both).
AUTO_ENCODING = {
    "cpu": {"text_chunk": 256, "checkpoint": True, "share_prefix": True},
    "accelerator": {"text_chunk": 0, "checkpoint": False, "share_prefix": False},
}

_KNOB_RULES = {"text_chunk": ("an int >= 0 (0 = all prompts in one pass)", lambda v: type(v) is int and v >= 0),
               "checkpoint": ("True or False", lambda v: isinstance(v, bool)),
               "share_prefix": ("True or False", lambda v: isinstance(v, bool))}


def check_encoding(config) -> None:
    """Refuse an encoding knob of a method's config (those of AUTO_ENCODING it has) that is neither "auto" nor
    a value of its kind, naming the field."""
    for name, (allowed, ok) in _KNOB_RULES.items():
        value = getattr(config, name, AUTO)
        if value != AUTO and not ok(value):
            raise ValueError(f"{type(config).__name__}.{name} = {value!r}: use {allowed}, or {AUTO!r} (by device)")


def prompt_names(classnames) -> list[str]:
    """Class names as prompts spell them (CoOp: "golden_retriever" -> "golden retriever").

    Raises a ValueError listing the classes whose names read the same once the tokenizer has cleaned them
    (it lower-cases and collapses whitespace): their prompts would be identical.
    """
    names = [name.replace("_", " ") for name in classnames]
    same = {}  # cleaned name -> the classes (index, name as given) that read so
    for index, (given, name) in enumerate(zip(classnames, names)):
        same.setdefault(clean(name), []).append(f"{given!r} (class {index})")
    repeated = [" = ".join(group) for group in same.values() if len(group) > 1]
    if repeated:
        more = f"; and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise ValueError(
            f"duplicate class names: {'; '.join(repeated[:5])}{more}. Their prompts would be identical ('_' reads "
            f"as a space, case is ignored), so the prediction between them is arbitrary: give each class a "
            f"distinct name"
        )
    return names


def random_context(n_ctx: int, width: int, n_cls: int | None = None, std: float = 0.02) -> torch.Tensor:
    """CoOp's random init: N(0, std^2) of shape (n_ctx, width), or (n_cls, n_ctx, width) class-specific."""
    if n_ctx < 1 or width < 1 or (n_cls is not None and n_cls < 1):
        raise ValueError(f"context shape needs n_ctx >= 1, width >= 1, n_cls >= 1; got {n_ctx}, {width}, {n_cls}")
    shape = (n_ctx, width) if n_cls is None else (n_cls, n_ctx, width)
    return nn.init.normal_(torch.empty(shape), std=std)


@torch.no_grad()
def context_from_words(clip, words: str) -> tuple[torch.Tensor, str]:
    """CoOp's word init: (ctx (n_ctx, width), placeholder text) from a phrase such as "a photo of a".

    Quirk kept from the official code: n_ctx is the number of space-separated WORDS, and ctx takes the
    first n_ctx TOKENS of the phrase; when a word is several tokens ("itap" = it + ap) the remaining
    tokens of the phrase stay in the fixed part of every prompt.
    """
    text = words.replace("_", " ")
    n_ctx = len(text.split(" "))
    if not text.strip():
        raise ValueError("ctx_init is empty: pass words such as 'a photo of a', or use a random init")
    tokens = tokenize_for(clip, text).to(clip.token_embedding.weight.device)  # (1, context_length)
    return clip.token_embedding(tokens)[0, 1 : 1 + n_ctx].clone(), text  # (n_ctx, width), skipping SOS


class ClassPrompts(nn.Module):
    """The fixed part of the prompts "<placeholder> <name>." of n_cls classes, assembled with a context.

    `placeholder` is the text standing where the context goes ("X X ... X" for a random init, the
    init phrase for a word init); its first `n_ctx` tokens are replaced by the context. Buffers (never
    saved: they follow from the class names), integers only, O(n_cls * L): `token_ids` (n_cls, L) int32
    with L = the longest prompt (77 with `full_length`), `eot_index` (n_cls,), `name_length` (n_cls,).
    The fixed embeddings are CLIP's frozen `token_embedding` of a chunk's ids, looked up when it is encoded.
    """

    def __init__(self, clip, classnames, n_ctx: int, placeholder: str | None = None, position: str = "end",
                 text_chunk: int | str = 0, checkpoint: bool | str = False, share_prefix: bool | str = True,
                 full_length: bool = False):  # fmt: skip
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"class token position {position!r} is not one of {POSITIONS}")
        if not classnames:
            raise ValueError("no class names given: a prompt learner needs at least one class")
        if text_chunk != AUTO and text_chunk < 0:
            raise ValueError(f"text_chunk must be >= 0 (0 = all prompts in one pass) or {AUTO!r}, got {text_chunk}")
        self.n_cls, self.n_ctx, self.position = len(classnames), n_ctx, position
        self.text_chunk, self.checkpoint, self.share_prefix, self.full_length = text_chunk, checkpoint, share_prefix, full_length
        # context vectors before the class tokens; an odd "middle" puts the shorter half first, as CoOp
        self.ctx_before_name = {"end": n_ctx, "middle": n_ctx // 2, "front": 0}[position]
        placeholder = " ".join(["X"] * n_ctx) if placeholder is None else placeholder
        names = prompt_names(classnames)  # "golden_retriever" -> "golden retriever"; duplicates raise
        # the official rule: the name's token count measured ALONE, without the trailing "." (which can
        # merge with the name's last token inside the sentence, e.g. "a (b)." ends in the token ").")
        tokenizer = model_tokenizer(clip)
        name_lens = [len(tokenizer.encode(name)) for name in names]
        tokens = tokenize_for(clip, [f"{placeholder} {name}." for name in names])  # (n_cls, 77); too long raises
        eot = first_eot(tokens)
        longest_eot = max(eot.tolist())
        # positions that can ever be read: up to the longest EOT (and the class chunk, for odd names)
        keep = tokens.shape[1] if full_length else min(tokens.shape[1], max(longest_eot, n_ctx + max(name_lens)) + 1)
        self.context_length = tokens.shape[1]
        # positions a pass of all classes runs, known on the host: the longest prompt (all 77 with full_length)
        self.longest = tokens.shape[1] if full_length else longest_eot + 1
        device = clip.token_embedding.weight.device
        # int32 ids (CLIP's vocabulary is 49,408): 4 bytes a position instead of `width` fp32 embeddings
        self.register_buffer("token_ids", tokens[:, :keep].to(device, torch.int32), persistent=False)
        self.register_buffer("eot_index", eot.to(device), persistent=False)
        self.register_buffer("name_length", torch.tensor(name_lens, dtype=torch.int32, device=device), persistent=False)
        # a reference, not a submodule: the weights stay CLIP's (saved, moved and frozen with it), for `assemble`
        # called without a model; `encode` looks up in the model it is given
        self.__dict__["_token_embedding"] = clip.token_embedding

    @property
    def length(self) -> int:
        """L, the prompt positions kept: up to the longest EOT (and class chunk), 77 with `full_length`."""
        return self.token_ids.shape[1]

    @property
    def name_lens(self) -> list:
        """Token count of each class name alone (CoOp's rule), as a list."""
        return self.name_length.tolist()

    @property
    def tokens(self) -> torch.Tensor:
        """(n_cls, context_length) int64 ids of the class sentences, as `tokenize` gives them.

        Positions from L on are after every EOT, so they are the tokenizer's zero padding.
        """
        return F.pad(self.token_ids.long(), (0, self.context_length - self.length))

    def _fixed(self, embedding, idx, length: int) -> torch.Tensor:
        """(R, length, width) frozen token embeddings of the rows `idx` (None: all); no grad: CLIP's table is fixed."""
        with torch.no_grad():
            return embedding(self.token_ids[:, :length] if idx is None else self.token_ids[idx, :length])

    def _layout(self, name_length: torch.Tensor, length: int) -> torch.Tensor:
        """(R, length) source of every prompt position in cat([ctx (n_ctx), fixed embeddings (L)]).

        The fixed sentence is [SOS][X * n_ctx][name][rest]; index k < n_ctx is ctx_k, n_ctx + q is fixed q.
        With a = `ctx_before_name` and a row's name length l, prompt position q is SOS (q = 0), ctx_{q-1}
        (q <= a), name token q-a-1 (q <= a + l), ctx_{q-l-1} (q <= n_ctx + l), else fixed q (".", EOT,
        padding). Built for the rows of one chunk, from their name lengths (R,).
        """
        n, a = self.n_ctx, self.ctx_before_name
        q = torch.arange(length, device=name_length.device)  # (L,)
        name = name_length.long()[:, None]  # (R, 1)
        source = (n + q).expand(name.shape[0], length)  # fixed q
        source = torch.where(q <= n + name, q - name - 1, source)  # context after the name (none at the "end")
        source = torch.where(q <= a + name, 2 * n + 1 + (q - a - 1), source)  # name token q-a-1 is fixed n+1+(q-a-1)
        source = torch.where(q <= a, q - 1, source)  # context before the name
        return torch.where(q == 0, n, source)  # SOS is fixed 0

    def _rows(self, ctx, class_idx, clip):  # -> (R, name lengths (R,), token embedding), ctx's shape checked
        embedding = self._token_embedding if clip is None else clip.token_embedding
        rows, width = self.n_cls if class_idx is None else class_idx.shape[0], embedding.weight.shape[-1]
        if ctx.shape[-2:] != (self.n_ctx, width) or ctx.dim() not in (2, 3) or (ctx.dim() == 3 and ctx.shape[0] != rows):
            raise ValueError(
                f"ctx must be ({self.n_ctx}, {width}) shared or ({rows}, {self.n_ctx}, {width}) per prompt, "
                f"got {tuple(ctx.shape)}"
            )
        return rows, self.name_length if class_idx is None else self.name_length[class_idx], embedding

    def concatenate(self, ctx: torch.Tensor, class_idx: torch.Tensor | None = None, clip=None) -> torch.Tensor:
        """The reference twin of `assemble` (R, L, width), CoOp's PromptLearner as written: per prompt, one
        torch.cat of [SOS][ctx before the name][name][ctx after it][".", EOT, padding]; arguments as `assemble`'s."""
        _, name_length, embedding = self._rows(ctx, class_idx, clip)
        fixed = self._fixed(embedding, class_idx, self.length)  # (R, L, width): the sentences "<placeholder> <name>."
        n, a = self.n_ctx, self.ctx_before_name
        prompts = []
        for r, (sentence, name_len) in enumerate(zip(fixed, name_length.tolist())):
            row_ctx = (ctx if ctx.dim() == 2 else ctx[r]).to(fixed.dtype)  # (n_ctx, width)
            name, rest = sentence[1 + n : 1 + n + name_len], sentence[1 + n + name_len :]  # skipping the placeholder
            prompts.append(torch.cat([sentence[:1], row_ctx[:a], name, row_ctx[a:], rest]))
        return torch.stack(prompts)

    def assemble(self, ctx: torch.Tensor, class_idx: torch.Tensor | None = None, length: int | None = None, clip=None,
                 start: int = 0):
        """Prompt embeddings (R, length - start, width): positions [start, length) of the prompts of the
        classes `class_idx` (default: all, R = n_cls); the same bits as `concatenate`, from one gather.

        ctx: (n_ctx, width) shared by all rows, or (R, n_ctx, width) one per row (class-specific
        contexts indexed by the caller, or SHIP's per-sample contexts). length: default all kept positions.
        clip: the model whose token embedding gives the fixed part (default: the one these prompts were built with).
        start: the first position returned (after a shared prefix that is encoded once, not per row).
        """
        rows, name_length, embedding = self._rows(ctx, class_idx, clip)
        width, length = embedding.weight.shape[-1], self.length if length is None else length
        fixed = self._fixed(embedding, class_idx, length)  # (R, L, width): only these rows are ever looked up
        ctx = ctx.to(fixed.dtype).expand(rows, self.n_ctx, width)
        sequence = torch.cat([ctx, fixed], dim=1)  # (R, n_ctx + L, width)
        source = self._layout(name_length, length)[:, start:, None].expand(rows, length - start, width)
        return sequence.gather(1, source)  # (R, L - start, width): copies, so prompts are exact

    def encoding(self, device: torch.device) -> dict:
        """{text_chunk, checkpoint, share_prefix} of a pass on `device`: each as set, AUTO_ENCODING's where "auto"."""
        by_device = AUTO_ENCODING["cpu" if torch.device(device).type == "cpu" else "accelerator"]
        return {name: by_device[name] if getattr(self, name) == AUTO else getattr(self, name) for name in by_device}

    def shared_prefix_length(self, ctx: torch.Tensor) -> int:
        """Leading positions identical in every prompt: SOS plus the context before the class tokens."""
        if ctx.dim() != 2:
            return 1  # per-row contexts: only SOS is shared
        return 1 + self.ctx_before_name

    def encode(self, clip, ctx: torch.Tensor, class_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Text features (R, E), unnormalised, of the prompts of `class_idx` (default all) with `ctx`."""
        if class_idx is not None and ctx.dim() == 2:  # shared context: a class's prompt is the same wherever it appears
            unique, inverse = torch.unique(class_idx, return_inverse=True)
            if unique.shape[0] < class_idx.shape[0]:
                return self._encode(clip, ctx, unique)[inverse]
        return self._encode(clip, ctx, class_idx)

    def _encode(self, clip, ctx, class_idx):
        """`encode` of the rows `class_idx` (None: all classes, then nothing is indexed) as the knobs say."""
        knobs = self.encoding(ctx.device)
        prefix = self.shared_prefix_length(ctx) if knobs["share_prefix"] and not self.full_length else 0
        states = None
        if prefix > 1 and (self.n_cls if class_idx is None else class_idx.shape[0]) > 1:
            # SOS + context: the same states in every prompt, once per call
            first = torch.zeros(1, dtype=torch.long, device=ctx.device) if class_idx is None else class_idx[:1]
            states = clip.text_prefix(self.assemble(ctx, first, prefix, clip))
        if not knobs["text_chunk"]:
            return self._encode_chunk(clip, ctx, class_idx, states)
        # as few chunks as text_chunk allows, of equal size, over the rows sorted by length: each chunk runs to
        # its own longest EOT, so rows are padded by the few positions their neighbours in length add
        order = torch.sort(self.eot_index if class_idx is None else self.eot_index[class_idx], stable=True)[1]
        pieces = []
        for part in order.tensor_split(-(-order.numel() // knobs["text_chunk"])):
            part_ctx = ctx if ctx.dim() == 2 else ctx[part]
            pieces.append(self._encode_chunk(clip, part_ctx, part if class_idx is None else class_idx[part], states))
        return torch.cat(pieces)[torch.argsort(order)]  # back to the caller's row order

    def _encode_chunk(self, clip, ctx, class_idx, states):
        if self.encoding(ctx.device)["checkpoint"] and torch.is_grad_enabled():  # keep inputs; recompute in backward
            return checkpoint(functools.partial(self._encode_rows, clip), ctx, class_idx, states, use_reentrant=False)
        return self._encode_rows(clip, ctx, class_idx, states)

    def _encode_rows(self, clip, ctx, class_idx, states):
        """Features of the rows `class_idx` (None: all), truncated at their longest EOT; after the prefix `states`
        when given."""
        eot = self.eot_index if class_idx is None else self.eot_index[class_idx]  # (R,)
        # all classes: their longest prompt is known on the host; a subset's is read back from the device (a sync),
        # except in a compiled graph, which runs to the longest of all (a static shape; exact by causality)
        static = class_idx is None or self.full_length or torch.compiler.is_compiling()
        length = self.longest if static else int(eot.max()) + 1
        if states is None:
            return clip.encode_text_embeddings(self.assemble(ctx, class_idx, length, clip), eot)
        p = states[0][0].shape[1]  # the prefix positions are in `states`: only the rest is assembled
        return clip.encode_text_after_prefix(states, self.assemble(ctx, class_idx, length, clip, start=p), eot - p)
