"""A1111 prompt syntax: emphasis, prompt editing, AND, extra networks, styles, and 75-token CLIP chunking."""
from __future__ import annotations

import pytest

from modules.engine.prompt_chunks import (Chunk, chunk_to_ids, chunk_to_weights, token_count, tokenize_weighted,
                                          tokenize_weighted_with_count)
from modules.engine.prompt_parser import (apply_style, parse_attention, prompt_schedules, split_and,
                                          strip_extra_networks)

B = ("BREAK", -1.0)

# ------------------------------------------------------------------------------------------------------------ emphasis

ATTENTION_CASES = [
    ("", [("", 1.0)]),
    ("a cat", [("a cat", 1.0)]),
    ("(a)", [("a", 1.1)]),
    ("((a))", [("a", 1.21)]),
    ("(((a)))", [("a", 1.331)]),
    ("[a]", [("a", 1 / 1.1)]),
    ("[[a]]", [("a", 1 / 1.21)]),
    ("(a:1.3)", [("a", 1.3)]),
    ("(a:0.5)", [("a", 0.5)]),
    ("(a:-0.5)", [("a", -0.5)]),
    ("(a:.8)", [("a", 0.8)]),
    ("(a:+2)", [("a", 2.0)]),
    ("(a: 1.3 )", [("a", 1.3)]),
    ("((a:0.5))", [("a", 0.55)]),
    ("[(a:1.5)]", [("a", 1.5 / 1.1)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("a (b) [c] (d:1.5) e", [("a ", 1.0), ("b", 1.1), (" ", 1.0), ("c", 1 / 1.1), (" ", 1.0), ("d", 1.5),
                             (" e", 1.0)]),
    ("(a (b) c)", [("a ", 1.1), ("b", 1.21), (" c", 1.1)]),
    ("(a:1.5) (b:1.5)", [("a", 1.5), (" ", 1.0), ("b", 1.5)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("[a](b)", [("a", 1 / 1.1), ("b", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",  # A1111's own doctest
     [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1),
      ("sky", 1.4641), (".", 1.1)]),
    (r"\(a\)", [("(a)", 1.0)]),
    (r"\[a\]", [("[a]", 1.0)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    ("a \\\\ b", [("a \\ b", 1.0)]),
    (r"(a \(b\))", [("a (b)", 1.1)]),
    (r"a\qb", [("aqb", 1.0)]),                      # A1111 drops a backslash that escapes nothing
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("a (b", [("a ", 1.0), ("b", 1.1)]),
    ("a (b (c", [("a ", 1.0), ("b ", 1.1), ("c", 1.21)]),
    ("[unbalanced", [("unbalanced", 1 / 1.1)]),
    ("a ) b", [("a ) b", 1.0)]),
    ("a ] b", [("a ] b", 1.0)]),
    ("(a))", [("a", 1.1), (")", 1.0)]),
    ("()", [("", 1.0)]),
    ("a BREAK b", [("a", 1.0), B, ("b", 1.0)]),
    ("BREAK", [B]),
    ("a BREAK BREAK b", [("a", 1.0), B, B, ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), B, ("b", 1.1)]),   # the marker keeps -1 inside emphasis
    ("a BREAKING b", [("a BREAKING b", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("1girl, 2 cats, 3.5 stars", [("1girl, 2 cats, 3.5 stars", 1.0)]),
    ("(1.5)", [("1.5", 1.1)]),
    ("café, naïve ünïcode", [("café, naïve ünïcode", 1.0)]),
    ("(日本語:1.2) テスト", [("日本語", 1.2), (" テスト", 1.0)]),
    ("🐱 (🐶)", [("🐱 ", 1.0), ("🐶", 1.1)]),
    ("time: 10:30", [("time: 10:30", 1.0)]),
    ("(a:b)", [("a:b", 1.1)]),                      # not a number: literal text, the group is a plain ( )
    ("a:1.2)", [("a:1.2)", 1.0)]),                  # weight closer without "(": literal
    ("(a:.)", [("a:.)", 1.1)]),                     # unparsable weight: literal, never raises
    ("(a:1.2.3)", [("a:1.2.3)", 1.1)]),
    ("((a:1.2)", [("a", 1.32)]),
]


@pytest.mark.parametrize("text,expected", ATTENTION_CASES, ids=[repr(c[0]) for c in ATTENTION_CASES])
def test_parse_attention(text, expected):
    got = parse_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])
    assert all(isinstance(t, str) and isinstance(w, float) for t, w in got)


@pytest.mark.parametrize("text", ["(((", ")))", "[[[]", "\\", "(:", ":)", "(a:", "[a:b:", "((a:1e5)", "(a:-)",
                                  "(" * 500 + "x", "\\" * 7, "BREAK" * 3])
def test_parse_attention_never_raises(text):
    assert parse_attention(text)


# ------------------------------------------------------------------------------------------------- prompt editing

SCHEDULE_CASES = [
    ("a cat", 20, [(20, "a cat")]),
    ("", 20, [(20, "")]),
    ("a [b:c:5] d", 20, [(5, "a b d"), (20, "a c d")]),
    ("[b:c:0.25]", 20, [(5, "b"), (20, "c")]),
    ("[b:c:0.5]", 30, [(15, "b"), (30, "c")]),
    ("[b:c:.5]", 10, [(5, "b"), (10, "c")]),
    ("a [hat:10]", 20, [(10, "a "), (20, "a hat")]),
    ("a [hat::10]", 20, [(10, "a hat"), (20, "a ")]),
    ("[a: b : 5 ]", 20, [(5, "a"), (20, " b ")]),
    ("[a|b]", 4, [(1, "a"), (2, "b"), (3, "a"), (4, "b")]),
    ("x [a|b|c]", 4, [(1, "x a"), (2, "x b"), (3, "x c"), (4, "x a")]),
    ("[a|]", 2, [(1, "a"), (2, "")]),
    ("[[a:b:5]:c:10]", 20, [(5, "a"), (10, "b"), (20, "c")]),
    ("[a:[b:c:15]:10]", 20, [(10, "a"), (15, "b"), (20, "c")]),
    ("[a|[b:c:2]]", 4, [(1, "a"), (2, "b"), (3, "a"), (4, "c")]),
    ("[(a:1.2):b:5]", 20, [(5, "(a:1.2)"), (20, "b")]),
    ("(a:1.2) [b:c:3]", 20, [(3, "(a:1.2) b"), (20, "(a:1.2) c")]),
    ("(a:1.2)", 20, [(20, "(a:1.2)")]),
    ("[a] ((b))", 20, [(20, "[a] ((b))")]),
    ("[a:b:25]", 20, [(20, "a")]),                  # past the end: clamped to the last step
    ("[a:b:0]", 20, [(20, "b")]),
    ("[a:b:-3]", 20, [(20, "b")]),
    ("[a:a:5]", 20, [(20, "a")]),                   # identical consecutive texts merged
    ("[a:b:0.5]", 1, [(1, "b")]),
    (r"\[a:b:5\]", 20, [(20, r"\[a:b:5\]")]),
    ("[a:b]", 20, [(20, "[a:b]")]),
    ("[a:b:c:5]", 20, [(20, "[a:b:c:5]")]),
    ("[a:b:5", 20, [(20, "[a:b:5")]),
    ("a:b:5]", 20, [(20, "a:b:5]")]),
    ("[a:b:x]", 20, [(20, "[a:b:x]")]),
    ("[[a:b:5] x", 20, [(5, "[a x"), (20, "[b x")]),  # the stray "[" is literal, the rest still schedules
    ("[a:b:5] | c", 20, [(20, "[a:b:5] | c")]),      # A1111's grammar rejects a stray "|": no scheduling at all
    ("[a:b:1e999]", 20, [(20, "[a:b:1e999]")]),
]


@pytest.mark.parametrize("prompt,steps,expected", SCHEDULE_CASES, ids=[f"{c[0]!r}@{c[1]}" for c in SCHEDULE_CASES])
def test_prompt_schedules(prompt, steps, expected):
    assert prompt_schedules([prompt], steps) == [expected]


def test_prompt_schedules_several_prompts_and_decimal_rules():
    assert prompt_schedules(["x", "[a:b:10]", "x"], 20) == [[(20, "x")], [(10, "a"), (20, "b")], [(20, "x")]]
    # default rule: when >= 1 is a step number even with a decimal point; A1111's newer rule: "." means a fraction
    assert prompt_schedules(["[a:b:1.0]"], 20) == [[(1, "a"), (20, "b")]]
    assert prompt_schedules(["[a:b:1.0]"], 20, use_old_scheduling=False) == [[(20, "a")]]
    # newer rule, hires pass of 10 steps after 20: integers count from the base pass, fractions from 1.0
    assert prompt_schedules(["[a:b:25]"], 20, hires_steps=10, use_old_scheduling=False) == [[(5, "a"), (10, "b")]]
    assert prompt_schedules(["[a:b:1.5]"], 20, hires_steps=10, use_old_scheduling=False) == [[(5, "a"), (10, "b")]]


@pytest.mark.parametrize("prompt", ["[" * 2000, "[a|" * 600 + "b", "(" * 3000 + "[a:b:5]", "|||", "\\",
                                    "[a:b:5]\\", "]]][[[::|"])
def test_prompt_schedules_never_raises(prompt):
    (schedule,) = prompt_schedules([prompt], 20)
    assert schedule[-1][0] == 20


# ------------------------------------------------------------------------------------------------------------- AND

AND_CASES = [
    ("a cat AND a dog:0.5", [("a cat", 1.0), ("a dog", 0.5)]),
    ("a cat", [("a cat", 1.0)]),
    ("", [("", 1.0)]),
    ("a:1.5 AND b", [("a", 1.5), ("b", 1.0)]),
    ("a AND b : -1", [("a", 1.0), ("b", -1.0)]),
    ("a AND b:.5 AND c:2.", [("a", 1.0), ("b", 0.5), ("c", 2.0)]),
    ("a ANDROID", [("a ANDROID", 1.0)]),
    ("a and b", [("a and b", 1.0)]),
    ("(a dog:0.5)", [("(a dog:0.5)", 1.0)]),
    ("a dog:abc", [("a dog:abc", 1.0)]),
    ("a [b:c:5] AND d", [("a [b:c:5]", 1.0), ("d", 1.0)]),
]


@pytest.mark.parametrize("prompt,expected", AND_CASES, ids=[repr(c[0]) for c in AND_CASES])
def test_split_and(prompt, expected):
    assert split_and(prompt) == expected


# --------------------------------------------------------------------------------------------------- extra networks

EXTRA_NETWORK_CASES = [
    ("a <lora:foo:0.8> cat", "a  cat", [("lora", ["foo", "0.8"])]),
    ("<lora:foo:0.5:0.8>x", "x", [("lora", ["foo", "0.5", "0.8"])]),
    ("<lyco:bar_v2:1>", "", [("lyco", ["bar_v2", "1"])]),
    ("<hypernet:h:0.6> x <lora:a b:1>", " x ", [("hypernet", ["h", "0.6"]), ("lora", ["a b", "1"])]),
    ("a < b > c, <lora>", "a < b > c, <lora>", []),
    ("plain", "plain", []),
]


@pytest.mark.parametrize("prompt,text,networks", EXTRA_NETWORK_CASES, ids=[repr(c[0]) for c in EXTRA_NETWORK_CASES])
def test_strip_extra_networks(prompt, text, networks):
    assert strip_extra_networks(prompt) == (text, networks)


# ---------------------------------------------------------------------------------------------------------- styles

@pytest.mark.parametrize("prompt,style,expected", [
    ("a cat", "oil painting", "a cat, oil painting"),
    ("a cat", "{prompt}, masterpiece", "a cat, masterpiece"),
    ("a cat", "x {prompt} y {prompt}", "x a cat y a cat"),
    ("", "oil painting", "oil painting"),
    ("a cat", "", "a cat"),
    ("", "{prompt}, masterpiece", ", masterpiece"),
])
def test_apply_style(prompt, style, expected):
    assert apply_style(prompt, style) == expected


# ------------------------------------------------------------------------------------------------- CLIP chunking

EOS = 49407
BOS = 49406
A, B_ID, CAT, DOG, COMMA = 320, 321, 2368, 1929, 267


@pytest.fixture(scope="session")
def clip_tok(tmp_path_factory):
    from modules.models.loader import tokenizer
    return tokenizer(tmp_path_factory.mktemp("clip_tok"), "<|endoftext|>")


@pytest.fixture(scope="session")
def openclip_tok(tmp_path_factory):
    from modules.models.loader import tokenizer
    return tokenizer(tmp_path_factory.mktemp("openclip_tok"), "!")


def chunks_of(tok, prompt):
    return tokenize_weighted(tok, parse_attention(prompt))


def test_chunk_basic_ids(clip_tok):
    (chunk,) = chunks_of(clip_tok, "a photo of a cat")
    assert len(chunk.tokens) == 75 and len(chunk.weights) == 75 and chunk.fixes == []
    assert chunk.tokens[:5] == [320, 1125, 539, 320, 2368] and chunk.tokens[5:] == [EOS] * 70
    ids = chunk_to_ids(chunk, clip_tok)
    assert len(ids) == 77 and ids[:7] == [BOS, 320, 1125, 539, 320, 2368, EOS] and ids[7:] == [EOS] * 70
    assert chunk_to_weights(chunk) == [1.0] * 77


def test_empty_prompt_is_one_padding_chunk(clip_tok):
    (chunk,) = chunks_of(clip_tok, "")
    assert chunk.tokens == [EOS] * 75 and chunk.weights == [1.0] * 75
    assert chunk_to_ids(chunk, clip_tok) == [BOS] + [EOS] * 76
    assert token_count(clip_tok, "") == (0, 75)


def test_long_prompt_two_chunks(clip_tok):
    chunks = chunks_of(clip_tok, "a " * 100)
    assert len(chunks) == 2
    assert chunks[0].tokens == [A] * 75
    assert chunks[1].tokens == [A] * 25 + [EOS] * 50
    assert all(len(chunk_to_ids(c, clip_tok)) == 77 for c in chunks)
    assert token_count(clip_tok, "a " * 100) == (100, 150)


def test_exactly_75_tokens_is_one_chunk(clip_tok):
    assert len(chunks_of(clip_tok, "a " * 75)) == 1
    assert token_count(clip_tok, "a " * 75) == (75, 75)
    assert len(chunks_of(clip_tok, "a " * 76)) == 2
    assert token_count(clip_tok, "a " * 80) == (80, 150)


def test_comma_backoff_moves_words_after_last_comma(clip_tok):
    prompt = "a " * 60 + ", " + "b " * 30            # comma at position 60, within the last 20 of the chunk
    chunks, count = tokenize_weighted_with_count(clip_tok, parse_attention(prompt))
    assert len(chunks) == 2
    assert chunks[0].tokens == [A] * 60 + [COMMA] + [EOS] * 14
    assert chunks[1].tokens == [B_ID] * 30 + [EOS] * 45
    assert count == 105 and token_count(clip_tok, prompt) == (105, 150)


def test_no_comma_backoff_when_comma_is_far(clip_tok):
    prompt = "a " * 10 + ", " + "b " * 80             # comma at position 10: the chunk is simply cut at 75
    chunks = chunks_of(clip_tok, prompt)
    assert chunks[0].tokens == [A] * 10 + [COMMA] + [B_ID] * 64
    assert chunks[1].tokens[:16] == [B_ID] * 16 and chunks[1].tokens[16:] == [EOS] * 59


def test_break_forces_new_chunk(clip_tok):
    chunks = chunks_of(clip_tok, "a cat BREAK a dog")
    assert [c.tokens[:3] for c in chunks] == [[A, CAT, EOS], [A, DOG, EOS]]
    assert token_count(clip_tok, "a cat BREAK a dog") == (77, 150)
    assert len(chunks_of(clip_tok, "a BREAK BREAK b")) == 3
    assert len(chunks_of(clip_tok, "a cat BREAK")) == 1


def test_weights_follow_emphasis(clip_tok):
    (chunk,) = chunks_of(clip_tok, "a (cat:1.5) [dog] ((a))")
    assert chunk.tokens[:4] == [A, CAT, DOG, A]
    assert chunk.weights[:4] == pytest.approx([1.0, 1.5, 1 / 1.1, 1.21])
    assert chunk.weights[4:] == [1.0] * 71
    assert chunk_to_weights(chunk)[:6] == pytest.approx([1.0, 1.0, 1.5, 1 / 1.1, 1.21, 1.0])


def test_token_count(clip_tok):
    prompt = "(masterpiece), [best quality], a photo of an astronaut riding a horse on the moon, <lora:foo:0.8>"
    assert token_count(clip_tok, prompt) == (17, 75)
    assert token_count(clip_tok, "a photo of a cat") == (5, 75)
    # the longest prompt-editing variant counts; AND sub-prompts are counted separately
    assert token_count(clip_tok, "a [b b b b b b:10]") == (7, 75)
    assert token_count(clip_tok, "a [b b b b b b|c]") == (7, 75)
    assert token_count(clip_tok, "a AND b b b:0.5") == (3, 75)
    assert token_count(clip_tok, "a AND b b b", is_positive=False) == (5, 75)


def test_openclip_pad_goes_after_eos(openclip_tok):
    (chunk,) = chunks_of(openclip_tok, "a cat")
    assert openclip_tok.pad_token_id == 0
    assert chunk.tokens == [A, CAT] + [0] * 73
    assert chunk_to_ids(chunk, openclip_tok) == [BOS, A, CAT, EOS] + [0] * 73
    assert chunk_to_weights(chunk) == [1.0] * 77


def test_embedding_hook_records_fixes(clip_tok):
    def lookup(ids, pos):
        return ("emb", 3, 1) if ids[pos] == CAT else None

    (chunk,) = tokenize_weighted(clip_tok, [("a cat a", 1.2)], find_embedding=lookup)
    assert chunk.tokens[:5] == [A, 0, 0, 0, A]
    assert [(f.offset, f.embedding) for f in chunk.fixes] == [(1, "emb")]
    assert chunk.weights[:5] == pytest.approx([1.2] * 5)


def test_chunk_defaults():
    c = Chunk([1] * 75, [1.0] * 75)
    assert c.fixes == [] and chunk_to_weights(c) == [1.0] * 77
