"""tinyprompt.prompts: context init, prompt assembly (all layouts) and every exact encoding shortcut.

The golden CoOp cases (official PromptLearner outputs) are checked in test_coop.py; here the pieces are
checked against the plain formulation: the official 77-token encoding of the assembled prompts.
"""

import pytest
import torch

from golden import needs_vocab
from tinyprompt.clip import CLIP
from tinyprompt.prompts import ClassPrompts, context_from_words, random_context
from tinyprompt.tokenizer import get_tokenizer, tokenize
from tolerance import assert_rounding_close, text_depth

NAMES = ["golden_retriever", "cat", "Annual Crop Land", "st. bernard", "a (b)", "jack-o'-lantern", "x"]
pytestmark = needs_vocab


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    model = CLIP(16, 32, 1, 64, 16, 77, 49408, 32, 2, 2).eval()  # tiny text tower: width 32, 2 heads, 2 layers
    with torch.no_grad():  # non-trivial LayerNorm / attention biases, so a wrong path cannot hide
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.bias", "ln_2.bias", "ln_final.bias", "in_proj_bias", "out_proj.bias")):
                p.normal_(std=0.1)
            elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight")):
                p.normal_(1.0, 0.1)
    return model.requires_grad_(False)


def reference_features(clip, prompts, tokens):
    """The official TextEncoder: all 77 positions, pooled at argmax(tokens)."""
    return clip.encode_text_embeddings(prompts, tokens.argmax(-1))


def test_random_context_shapes_and_std():
    torch.manual_seed(0)
    assert random_context(4, 32).shape == (4, 32)
    ctx = random_context(16, 512, n_cls=10)
    assert ctx.shape == (10, 16, 512)
    assert abs(ctx.std().item() - 0.02) < 1e-3
    with pytest.raises(ValueError, match="n_ctx >= 1"):
        random_context(0, 32)


def test_word_init_counts_words_not_tokens(clip):
    ctx, text = context_from_words(clip, "a_photo_of_a")
    ids = tokenize("a photo of a")[0]
    assert text == "a photo of a" and ctx.shape == (4, 32)
    assert torch.equal(ctx, clip.token_embedding.weight[ids[1:5]])
    # "itap" is two tokens (it + ap): n_ctx = 3 words, ctx = the first 3 TOKENS (it, ap, of)
    ctx, _ = context_from_words(clip, "itap of a")
    ids = tokenize("itap of a")[0]
    assert ctx.shape == (3, 32) and len(get_tokenizer().encode("itap")) == 2
    assert torch.equal(ctx, clip.token_embedding.weight[ids[1:4]])


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_assembly_layout_by_hand(clip, position):
    n_ctx = 3  # odd: the middle layout splits it 1 + 2
    prompts = ClassPrompts(clip, NAMES, n_ctx, position=position, full_length=True)
    ctx = torch.randn(n_ctx, 32)
    out = prompts.assemble(ctx)  # (n_cls, 77, width)
    emb = clip.token_embedding(prompts.tokens)  # sentence "X X X name." per class
    assert out.shape == (len(NAMES), 77, 32)
    for i, n in enumerate(prompts.name_lens):
        name = emb[i, 1 + n_ctx : 1 + n_ctx + n]
        rest = emb[i, 1 + n_ctx + n :]
        parts = {"end": [ctx, name], "middle": [ctx[:1], name, ctx[1:]], "front": [name, ctx]}[position]
        assert torch.equal(out[i], torch.cat([emb[i, :1], *parts, rest]))
    assert torch.equal(out, prompts.concatenate(ctx))  # the gather copies what CoOp's concatenation copies
    # the name length is counted alone: "a (b)" is 4 tokens, its ")" merges with "." in the sentence
    assert prompts.name_lens[NAMES.index("a (b)")] == 4


def test_placeholder_text_and_truncated_buffers(clip):
    prompts = ClassPrompts(clip, NAMES, 4)
    assert torch.equal(prompts.tokens, tokenize([f"X X X X {n.replace('_', ' ')}." for n in NAMES]))
    longest = int(prompts.tokens.argmax(-1).max()) + 1
    assert prompts.token_ids.shape == (len(NAMES), longest) == (len(NAMES), prompts.length)  # positions that can matter
    # non-persistent, and CLIP's token embedding is referenced, not owned: nothing to save, no parameters
    assert not prompts.state_dict() and not list(prompts.parameters())


def full_table_prompts(clip, prompts, ctx, idx):
    """The previous formulation, by hand: an (n_cls, L, width) table of ALL classes' token embeddings,
    indexed by class, with the context spliced in at the class token position."""
    table = clip.token_embedding(prompts.tokens[:, : prompts.length])  # (n_cls, L, width)
    n, a = prompts.n_ctx, prompts.ctx_before_name
    rows = []
    for r, i in enumerate(idx.tolist()):
        c, name_len = (ctx if ctx.dim() == 2 else ctx[r]), prompts.name_lens[i]
        name, rest = table[i, 1 + n : 1 + n + name_len], table[i, 1 + n + name_len :]
        rows.append(torch.cat([table[i, :1], c[:a], name, c[a:], rest]))
    return torch.stack(rows)  # (R, L, width)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_buffers_are_ids_not_embeddings_and_encoding_is_unchanged(clip, position, monkeypatch):
    """ClassPrompts holds (n_cls, L) integer ids, not an (n_cls, L, width) float table: its memory is O(N * L)
    integers, and the fixed embeddings are looked up per encoded chunk. Same prompts and features, bit for bit."""
    n = 3000
    names = NAMES + [" ".join(["thing"] * (1 + i % 3)) + f" {i}" for i in range(n - len(NAMES))]  # lengths vary
    prompts = ClassPrompts(clip, names, 3, position=position, text_chunk=4)  # odd n_ctx: middle splits 1 + 2
    buffers = dict(prompts.named_buffers())
    assert all(not b.is_floating_point() for b in buffers.values()), {k: b.dtype for k, b in buffers.items()}
    total = sum(b.numel() * b.element_size() for b in buffers.values())
    assert total < n * prompts.length * 8  # int32 ids + per-class EOT and name length; a table is n * L * 32 * 4
    idx = torch.tensor([2999, 4, 17, 4, 1500, 0, 6, 2048, 333])  # a POMP-like subset, one class repeated
    g = torch.Generator().manual_seed(3)
    for ctx in (torch.randn(3, 32, generator=g), torch.randn(len(idx), 3, 32, generator=g)):  # shared, per row
        ctx.requires_grad_()
        assert torch.equal(prompts.assemble(ctx, idx), full_table_prompts(clip, prompts, ctx, idx))
        assert torch.equal(prompts.assemble(ctx, idx), prompts.concatenate(ctx, idx))  # the reference twin: copies
        lookups = []  # rows and positions of every token-embedding lookup: one chunk at a time
        hook = clip.token_embedding.register_forward_hook(lambda m, args, out: lookups.append(args[0].shape))
        out = prompts.encode(clip, ctx, idx)
        hook.remove()
        assert lookups and all(rows <= 4 and length <= prompts.length for rows, length in lookups)
        # the previous formulation: the same encoding, its fixed part indexed from the full table
        table = clip.token_embedding(prompts.tokens[:, : prompts.length])
        with monkeypatch.context() as patch:
            patch.setattr(prompts, "_fixed", lambda embedding, rows, length: table[rows, :length])
            ref = prompts.encode(clip, ctx, idx)
        cot = torch.randn(out.shape, generator=g)
        grad, ref_grad = (torch.autograd.grad((o * cot).sum(), ctx)[0] for o in (out, ref))
        assert torch.equal(out, ref) and torch.equal(grad, ref_grad)
    # the ids move with the module (CLIP's weights move with CLIP: the methods hold both)
    moved = prompts.to("meta")
    assert all(b.device.type == "meta" for b in moved.buffers()) and clip.token_embedding.weight.device.type == "cpu"


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("shared", [True, False])
def test_encode_equals_full_length_encoding_with_grads(clip, position, shared):
    torch.manual_seed(1)
    full = ClassPrompts(clip, NAMES, 4, position=position, full_length=True)
    ctx = (torch.randn(4, 32) if shared else torch.randn(len(NAMES), 4, 32)).requires_grad_()
    ref = reference_features(clip, full.assemble(ctx), full.tokens)
    cot = torch.randn_like(ref)
    (ref_grad,) = torch.autograd.grad((ref * cot).sum(), ctx)
    for options in [dict(), dict(share_prefix=False), dict(text_chunk=3), dict(text_chunk=2, checkpoint=True),
                    dict(text_chunk=1, share_prefix=True)]:  # fmt: skip
        out = ClassPrompts(clip, NAMES, 4, position=position, **options).encode(clip, ctx)
        (grad,) = torch.autograd.grad((out * cot).sum(), ctx)
        # chunks, length-sorted rows and the shared prefix reorder the same sums: equal up to rounding
        assert_rounding_close(out, ref, *text_depth(clip), msg=f"{options}")
        assert_rounding_close(grad, ref_grad, *text_depth(clip, backward=True), msg=f"{options}")


def test_subset_duplicates_and_per_row_context(clip):
    torch.manual_seed(2)
    prompts = ClassPrompts(clip, NAMES, 4, text_chunk=2)
    full = ClassPrompts(clip, NAMES, 4, full_length=True)
    ctx = torch.randn(4, 32, requires_grad=True)
    idx = torch.tensor([5, 1, 1, 6, 0, 5])  # repeated classes (POMP's positives can repeat)
    out = prompts.encode(clip, ctx, idx)
    ref = reference_features(clip, full.assemble(ctx), full.tokens)[idx]
    assert_rounding_close(out, ref, *text_depth(clip))  # chunked and deduplicated: the same sums, reordered
    cot = torch.randn_like(out)
    g, g_ref = (torch.autograd.grad((o * cot).sum(), ctx)[0] for o in (out, ref))
    assert_rounding_close(g, g_ref, *text_depth(clip, backward=True))
    # one context per row (SHIP: ctx + a per-sample bias), rows aligned with class_idx, never deduplicated
    per_row = ctx.detach()[None] + torch.randn(len(idx), 1, 32)
    out = prompts.encode(clip, per_row, idx)
    ref = reference_features(clip, full.assemble(per_row, idx), full.tokens[idx])
    assert_rounding_close(out, ref, *text_depth(clip))
    assert not torch.allclose(out[1], out[2])  # same class, different contexts


def test_bad_inputs(clip):
    prompts = ClassPrompts(clip, NAMES, 4)
    with pytest.raises(ValueError, match=r"ctx must be \(4, 32\) shared"):
        prompts.assemble(torch.zeros(5, 32))
    with pytest.raises(ValueError, match="per prompt"):
        prompts.assemble(torch.zeros(3, 4, 32))  # 3 rows for 7 classes
    with pytest.raises(ValueError, match="class token position"):
        ClassPrompts(clip, NAMES, 4, position="back")
    with pytest.raises(ValueError, match="no class names"):
        ClassPrompts(clip, [], 4)
    with pytest.raises(ValueError, match="tokens"):  # a name too long for 77 tokens names the text
        ClassPrompts(clip, ["word " * 80], 4)


@pytest.mark.parametrize("text_chunk", [1, 2, 3, 6, 7])
def test_chunks_are_equal_slices_of_the_rows_sorted_by_length(clip, monkeypatch, text_chunk):
    """As few passes as text_chunk allows (ceil(7 / text_chunk)), of sizes differing by at most one, over
    the rows sorted by EOT, so each pass pads its rows only to the longest of its neighbours in length."""
    prompts = ClassPrompts(clip, NAMES, 4, text_chunk=text_chunk)
    seen = []
    real = prompts._encode_rows
    monkeypatch.setattr(prompts, "_encode_rows", lambda c, ctx, idx, states: seen.append(idx) or real(c, ctx, idx, states))
    with torch.no_grad():
        prompts.encode(clip, torch.randn(4, 32))
    assert sorted(torch.cat(seen).tolist()) == list(range(len(NAMES)))  # every class exactly once
    sizes = [len(part) for part in seen]
    assert len(seen) == -(-len(NAMES) // text_chunk) and max(sizes) <= text_chunk and max(sizes) - min(sizes) <= 1
    lengths = prompts.eot_index[torch.cat(seen)].tolist()
    assert lengths == sorted(lengths) and len(set(prompts.eot_index.tolist())) > 1  # NAMES have several lengths
