"""The weight math of each LoRA/LyCORIS kind (modules/networks/lora_math*.py) against references written out here by
hand from each format's own formula (explicit matmul / einsum / torch.kron / permutation matrices) — never by
calling lora_math — on tiny random tensors, for Linear, 1×1 Conv, 3×3 Conv and norm weights."""
from __future__ import annotations

import re

import pytest
import torch

from modules.networks.lora_math import build_module

TOL = dict(rtol=1e-5, atol=1e-5)
gen = torch.Generator().manual_seed(1234)


def rnd(*shape, std=1.0):
    return torch.randn(*shape, generator=gen) * std


def t(x):
    return torch.tensor(float(x))


def close(a, b):
    assert a is not None and a.dtype == torch.float32 and a.shape == b.shape, (a, b.shape)
    torch.testing.assert_close(a, b, **TOL)


# ---- LoRA / LoCon / CP --------------------------------------------------------------------------------------------

def test_lora_linear_scale_is_alpha_over_rank():
    up, down, w = rnd(6, 3), rnd(3, 5), rnd(6, 5)
    m = build_module("lora_unet_x", {"lora_up.weight": up, "lora_down.weight": down, "alpha": t(1.5)})
    assert m.kind == "lora" and m.rank == 3
    close(m.weight_delta(w, 0.7), 0.7 * (1.5 / 3) * (up @ down))
    assert m.bias_delta(rnd(6), 0.7) is None


def test_lora_without_alpha_has_scale_one_and_file_scale_overrides():
    up, down, w = rnd(6, 3), rnd(3, 5), rnd(6, 5)
    close(build_module("k", {"lora_up.weight": up, "lora_down.weight": down}).weight_delta(w, 1.0), up @ down)
    m = build_module("k", {"lora_up.weight": up, "lora_down.weight": down, "alpha": t(3), "scale": t(0.25)})
    close(m.weight_delta(w, 2.0), 2.0 * 0.25 * (up @ down))


def test_lora_peft_names_are_up_and_down():
    up, down = rnd(6, 3), rnd(3, 5)
    m = build_module("k", {"lora_B.weight": up, "lora_A.weight": down})
    close(m.weight_delta(rnd(6, 5), 1.0), up @ down)


def test_lora_conv_1x1():
    up, down, w = rnd(6, 2, 1, 1), rnd(2, 5, 1, 1), rnd(6, 5, 1, 1)
    m = build_module("k", {"lora_up.weight": up, "lora_down.weight": down, "alpha": t(4)})
    ref = torch.einsum("or,ri->oi", up[:, :, 0, 0], down[:, :, 0, 0])[:, :, None, None]
    close(m.weight_delta(w, 1.0), 2.0 * ref)


def test_locon_3x3_down_1x1_up():
    up, down, w = rnd(6, 2, 1, 1), rnd(2, 5, 3, 3), rnd(6, 5, 3, 3)
    m = build_module("k", {"lora_up.weight": up, "lora_down.weight": down, "alpha": t(1)})
    ref = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)
    close(m.weight_delta(w, 0.5), 0.5 * 0.5 * ref)


def test_lora_cp_tucker_mid():
    up, mid, down, w = rnd(6, 2, 1, 1), rnd(2, 3, 3, 3), rnd(3, 5, 1, 1), rnd(6, 5, 3, 3)
    m = build_module("k", {"lora_up.weight": up, "lora_mid.weight": mid, "lora_down.weight": down, "alpha": t(3)})
    assert m.rank == 3
    ref = torch.einsum("oa,abkl,bi->oikl", up[:, :, 0, 0], mid, down[:, :, 0, 0])
    close(m.weight_delta(w, 1.0), ref)


def test_lora_for_inpainting_conv_in_pads_the_extra_input_channels():
    up, down, w = rnd(6, 2, 1, 1), rnd(2, 4, 3, 3), rnd(6, 9, 3, 3)
    d = build_module("k", {"lora_up.weight": up, "lora_down.weight": down}).weight_delta(w, 1.0)
    assert d.shape == w.shape
    close(d[:, :4], torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down))
    assert torch.count_nonzero(d[:, 4:]) == 0


# ---- LoHa ---------------------------------------------------------------------------------------------------------

def test_loha_linear_is_hadamard_of_two_products():
    w1a, w1b, w2a, w2b = rnd(6, 2), rnd(2, 5), rnd(6, 2), rnd(2, 5)
    m = build_module("k", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b, "alpha": t(1)})
    assert m.kind == "loha" and m.rank == 2
    close(m.weight_delta(rnd(6, 5), 1.0), 0.5 * (w1a @ w1b) * (w2a @ w2b))


def test_loha_conv_3x3_flattened_factors():
    w1a, w1b, w2a, w2b, w = rnd(6, 2), rnd(2, 45), rnd(6, 2), rnd(2, 45), rnd(6, 5, 3, 3)
    m = build_module("k", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b})
    close(m.weight_delta(w, 1.0), ((w1a @ w1b) * (w2a @ w2b)).reshape(6, 5, 3, 3))


def test_loha_tucker():
    r = 2
    t1, t2 = rnd(r, r, 3, 3), rnd(r, r, 3, 3)
    w1a, w1b, w2a, w2b, w = rnd(r, 6), rnd(r, 5), rnd(r, 6), rnd(r, 5), rnd(6, 5, 3, 3)
    m = build_module("k", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                           "hada_t1": t1, "hada_t2": t2, "alpha": t(4)})
    f1 = torch.einsum("abkl,ao,bi->oikl", t1, w1a, w1b)
    f2 = torch.einsum("abkl,ao,bi->oikl", t2, w2a, w2b)
    close(m.weight_delta(w, 1.0), 2.0 * f1 * f2)


# ---- LoKr ---------------------------------------------------------------------------------------------------------

def test_lokr_whole_factors_ignore_alpha():
    w1, w2 = rnd(2, 3), rnd(4, 5)
    m = build_module("k", {"lokr_w1": w1, "lokr_w2": w2, "alpha": t(7)})
    assert m.kind == "lokr" and m.rank is None
    close(m.weight_delta(rnd(8, 15), 1.0), torch.kron(w1, w2))


def test_lokr_decomposed_w2_scales_by_its_rank():
    w1, w2a, w2b = rnd(2, 3), rnd(4, 2), rnd(2, 5)
    m = build_module("k", {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": t(1)})
    close(m.weight_delta(rnd(8, 15), 1.0), 0.5 * torch.kron(w1, w2a @ w2b))


def test_lokr_decomposed_w1_only_and_both_use_w2b_rank_last():
    w1a, w1b, w2 = rnd(2, 3), rnd(3, 3), rnd(4, 5)
    m = build_module("k", {"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2": w2, "alpha": t(1)})
    close(m.weight_delta(rnd(8, 15), 1.0), (1 / 3) * torch.kron(w1a @ w1b, w2))
    w2a, w2b = rnd(4, 2), rnd(2, 5)
    m = build_module("k", {"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": t(1)})
    assert m.rank == 2
    close(m.weight_delta(rnd(8, 15), 1.0), 0.5 * torch.kron(w1a @ w1b, w2a @ w2b))


def test_lokr_conv_whole_and_flattened_w2():
    w1, w2, w = rnd(2, 3), rnd(3, 2, 3, 3), rnd(6, 6, 3, 3)
    m = build_module("k", {"lokr_w1": w1, "lokr_w2": w2})
    close(m.weight_delta(w, 1.0), torch.kron(w1[:, :, None, None], w2))
    w2a, w2b = rnd(3, 2), rnd(2, 18)
    m = build_module("k", {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": t(2)})
    close(m.weight_delta(w, 1.0), torch.kron(w1[:, :, None, None], (w2a @ w2b).reshape(3, 2, 3, 3)))


def test_lokr_tucker_w2():
    w1, t2, w2a, w2b, w = rnd(2, 3), rnd(2, 2, 3, 3), rnd(2, 3), rnd(2, 2), rnd(6, 6, 3, 3)
    m = build_module("k", {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "lokr_t2": t2, "alpha": t(1)})
    w2 = torch.einsum("abkl,ac,bd->cdkl", t2, w2a, w2b).contiguous()   # torch.kron needs it
    close(m.weight_delta(w, 1.0), 0.5 * torch.kron(w1[:, :, None, None], w2))


# ---- IA3, full, norm, GLoRA ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("on_input", [False, True])
def test_ia3_scales_one_axis(on_input):
    w = rnd(6, 5)
    v = rnd(5 if on_input else 6)
    m = build_module("k", {"weight": v, "on_input": torch.tensor(on_input)})
    assert m.kind == "ia3"
    ref = w * v[None, :] if on_input else w * v[:, None]
    close(m.weight_delta(w, 0.5), 0.5 * ref)
    close(w + m.weight_delta(w, 1.0), w * ((1 + v)[None, :] if on_input else (1 + v)[:, None]))


def test_full_diff_and_diff_b_ignore_alpha():
    diff, diff_b, w = rnd(6, 5, 3, 3), rnd(6), rnd(6, 5, 3, 3)
    m = build_module("k", {"diff": diff, "diff_b": diff_b, "alpha": t(3)})
    assert m.kind == "full"
    close(m.weight_delta(w, 0.3), 0.3 * diff)
    close(m.bias_delta(rnd(6), 0.3), 0.3 * diff_b)
    close(m.bias_delta(None, 1.0), diff_b)


def test_norm_weight_and_bias():
    wn, bn, w = rnd(8), rnd(8), rnd(8)
    m = build_module("k", {"w_norm": wn, "b_norm": bn})
    assert m.kind == "norm"
    close(m.weight_delta(w, 2.0), 2.0 * wn)
    close(m.bias_delta(rnd(8), 2.0), 2.0 * bn)


def test_glora():
    r, o, i = 2, 6, 5
    a1, a2, b1, b2, w = rnd(r, i), rnd(i, r), rnd(r, i), rnd(o, r), rnd(o, i)
    m = build_module("k", {"a1.weight": a1, "a2.weight": a2, "b1.weight": b1, "b2.weight": b2, "alpha": t(1)})
    assert m.kind == "glora"
    close(m.weight_delta(w, 0.5), 0.5 * (b2 @ b1 + (w @ a2) @ a1))


def test_glora_lycoris4_layout_linear_conv_and_tucker():
    r, o, i = 2, 6, 5
    a1, a2, b1, b2, w = rnd(i, r), rnd(r, i), rnd(o, r), rnd(r, i), rnd(o, i)
    m = build_module("k", {"a1.weight": a1, "a2.weight": a2, "b1.weight": b1, "b2.weight": b2, "alpha": t(1)})
    assert m.rank == 2
    close(m.weight_delta(w, 1.0), 0.5 * (b1 @ b2 + w @ a1 @ a2))
    w = rnd(o, i, 3, 3)
    b2 = rnd(r, i, 3, 3)
    m = build_module("k", {"a1.weight": a1[:, :, None, None], "a2.weight": a2[:, :, None, None],
                           "b1.weight": b1[:, :, None, None], "b2.weight": b2, "alpha": t(2)})
    ref = torch.einsum("or,rikl->oikl", b1, b2) + torch.einsum("oakl,ar,ri->oikl", w, a1, a2)
    close(m.weight_delta(w, 1.0), ref)
    bm, b2 = rnd(r, r, 3, 3), rnd(r, i, 1, 1)
    m = build_module("k", {"a1.weight": a1, "a2.weight": a2, "b1.weight": b1, "b2.weight": b2, "bm.weight": bm})
    ref = torch.einsum("or,rskl,si->oikl", b1, bm, b2[:, :, 0, 0]) + torch.einsum("oakl,ar,ri->oikl", w, a1, a2)
    close(m.weight_delta(w, 1.0), ref)


# ---- OFT / BOFT ---------------------------------------------------------------------------------------------------

def cayley(q):
    s = q - q.transpose(-1, -2)
    eye = torch.eye(q.shape[-1]).expand_as(s)
    return (eye + s) @ torch.linalg.inv(eye - s)


def assert_orthogonal(r):
    torch.testing.assert_close(r.transpose(-1, -2) @ r, torch.eye(r.shape[-1]).expand_as(r).contiguous(), **TOL)


@pytest.mark.parametrize("shape", [(8, 5), (8, 5, 3, 3)])
def test_oft_blocks_rotate_output_rows(shape):
    q, w = rnd(4, 2, 2, std=0.3), rnd(*shape)
    m = build_module("k", {"oft_blocks": q, "alpha": t(0)})   # alpha 0: no constraint
    assert m.kind == "oft"
    r = cayley(q)
    assert_orthogonal(r)
    big = torch.block_diag(*r)                # [8, 8]
    rotated = (big.T @ w.reshape(8, -1)).reshape(shape)   # each block of rows becomes Rᵀ · rows
    close(m.weight_delta(w, 1.0), rotated - w)
    new = w + m.weight_delta(w, 1.0)          # a rotation keeps every column's length
    torch.testing.assert_close(new.reshape(8, -1).norm(dim=0), w.reshape(8, -1).norm(dim=0), **TOL)
    close(m.weight_delta(w, 0.4), 0.4 * (rotated - w))   # A1111: the multiplier scales R·W − W


def test_oft_constraint_clamps_the_skew_norm():
    q, w = rnd(2, 4, 4), rnd(8, 3)
    alpha = 0.01                              # constraint = alpha · out = 0.08, far below ‖Q − Qᵀ‖
    s = q - q.transpose(1, 2)
    s = s * (alpha * 8 / s.norm())
    eye = torch.eye(4).expand_as(s)
    r = (eye + s) @ torch.linalg.inv(eye - s)
    ref = (torch.block_diag(*r).T @ w) - w
    close(build_module("k", {"oft_blocks": q, "alpha": t(alpha)}).weight_delta(w, 1.0), ref)


def test_oft_diag_is_the_rotation_itself_and_rescale_scales_rows():
    r = cayley(rnd(2, 4, 4, std=0.3))
    w, rescale = rnd(8, 5), rnd(8, 1) + 1
    m = build_module("k", {"oft_diag": r, "rescale": rescale})
    close(m.weight_delta(w, 1.0), rescale * (torch.block_diag(*r).T @ w) - w)


def butterfly_perm(out, stage, b):
    """Index map of stage `stage`'s channel shuffle: row j of the shuffled weight is row perm[j] of the input."""
    k = 2 ** stage * (b // 2)
    return torch.arange(out).reshape(-1, 2, k).transpose(1, 2).reshape(-1)


@pytest.mark.parametrize("shape", [(8, 3), (8, 3, 3, 3)])
def test_boft_butterfly_with_permutation_matrices(shape):
    q, w = rnd(2, 4, 2, 2, std=0.3), rnd(*shape)   # 2 stages of 4 blocks of 2
    m = build_module("k", {"oft_blocks": q, "alpha": t(0)})
    assert m.kind == "boft"
    r = cayley(q)
    assert_orthogonal(r)
    total = torch.eye(8)
    for i in range(2):
        p = torch.eye(8)[butterfly_perm(8, i, 2)]         # P·x == x[perm]
        total = p.T @ torch.block_diag(*r[i]) @ p @ total
    assert_orthogonal(total)
    ref = (total @ w.reshape(8, -1)).reshape(shape) - w
    close(m.weight_delta(w, 1.0), ref)


# ---- DoRA ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3, 3)])
def test_dora_rescales_input_columns_after_scale_before_multiplier(shape):
    w = rnd(*shape)
    up, down = rnd(6, 2), rnd(2, 5 * (9 if len(shape) == 4 else 1))
    mag = rnd(*([1, 5] + [1] * (len(shape) - 2))).abs() + 0.5
    m = build_module("k", {"lora_up.weight": up, "lora_down.weight": down, "alpha": t(1), "dora_scale": mag})
    merged = w + 0.5 * (up @ down).reshape(shape)
    dims = [0] + list(range(2, len(shape)))
    col_norm = merged.pow(2).sum(dim=dims, keepdim=True).sqrt()
    ref = merged * (mag / col_norm) - w
    close(m.weight_delta(w, 1.0), ref)
    close(m.weight_delta(w, 0.3), 0.3 * ref)


def test_dora_per_output_scale_is_broadcast_against_column_norms_as_a1111_does():
    """LyCORIS's default DoRA stores one magnitude per output row ([out, 1]); A1111 v1.10.1 still divides by the
    column norms, and so do we (the same image as A1111, not the one LyCORIS would merge)."""
    w, up, down = rnd(6, 5), rnd(6, 2), rnd(2, 5)
    mag = rnd(6, 1).abs() + 0.5
    m = build_module("k", {"lora_up.weight": up, "lora_down.weight": down, "dora_scale": mag})
    merged = w + up @ down
    close(m.weight_delta(w, 1.0), merged * (mag / merged.norm(dim=0, keepdim=True)) - w)


# ---- every kind: multiplier 0, linearity, float32, errors ---------------------------------------------------------

CASES = {
    "lora": ({"lora_up.weight": rnd(6, 2), "lora_down.weight": rnd(2, 5), "alpha": t(1)}, (6, 5)),
    "loha": ({"hada_w1_a": rnd(6, 2), "hada_w1_b": rnd(2, 5), "hada_w2_a": rnd(6, 2), "hada_w2_b": rnd(2, 5)}, (6, 5)),
    "lokr": ({"lokr_w1": rnd(2, 1), "lokr_w2": rnd(3, 5)}, (6, 5)),
    "ia3": ({"weight": rnd(6), "on_input": torch.tensor(False)}, (6, 5)),
    "full": ({"diff": rnd(6, 5)}, (6, 5)),
    "norm": ({"w_norm": rnd(6), "b_norm": rnd(6)}, (6,)),
    "glora": ({"a1.weight": rnd(2, 5), "a2.weight": rnd(5, 2), "b1.weight": rnd(2, 5), "b2.weight": rnd(6, 2)},
              (6, 5)),
    "oft": ({"oft_blocks": rnd(3, 2, 2, std=0.3)}, (6, 5)),
    "boft": ({"oft_blocks": rnd(1, 3, 2, 2, std=0.3)}, (6, 5)),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_kind_zero_multiplier_linear_and_float32(kind):
    tensors, shape = CASES[kind]
    m = build_module("k", tensors)
    assert m.kind == kind
    w = rnd(*shape)
    assert m.weight_delta(w, 0.0) is None and m.bias_delta(rnd(shape[0]), 0.0) is None
    d1 = m.weight_delta(w, 1.0)
    assert d1.dtype == torch.float32 and d1.shape == w.shape and d1.abs().sum() > 0
    close(m.weight_delta(w, -1.7), -1.7 * d1)
    close(m.weight_delta(w.half(), 1.0), m.weight_delta(w.half().float(), 1.0))
    before = {k: v.clone() for k, v in tensors.items()}, w.clone()
    m.weight_delta(w, 0.5), m.bias_delta(rnd(shape[0]), 0.5)
    assert all(torch.equal(before[0][k], v) for k, v in tensors.items()) and torch.equal(before[1], w)   # no in-place


def test_unknown_suffixes_name_the_key_and_the_suffixes():
    with pytest.raises(ValueError, match=r"lora_unet_mid\b.*'foo'.*'lora_up.weight'"):
        build_module("lora_unet_mid", {"lora_up.weight": rnd(2, 2), "foo": rnd(2)})


@pytest.mark.parametrize("tensors, weight, words", [
    ({"lora_up.weight": rnd(6, 2), "lora_down.weight": rnd(2, 5)}, rnd(7, 5), [r"\[6, 5\]", r"\[7, 5\]"]),
    ({"diff": rnd(6, 5)}, rnd(6, 4), [r"\[6, 5\]", r"\[6, 4\]"]),
    ({"weight": rnd(4), "on_input": torch.tensor(True)}, rnd(6, 5), [r"\[4\]", r"\[6, 5\]"]),
    ({"oft_blocks": rnd(3, 2, 2)}, rnd(8, 5), [r"\[3, 2, 2\]", r"\[8, 5\]"]),
    ({"lokr_w1": rnd(2, 2), "lokr_w2": rnd(3, 3)}, rnd(6, 5), [r"\[6, 6\]", r"\[6, 5\]"]),
])
def test_shape_mismatch_names_the_key_and_both_shapes(tensors, weight, words):
    m = build_module("lora_te_x", tensors)
    with pytest.raises(ValueError, match="lora_te_x") as err:
        m.weight_delta(weight, 1.0)
    for word in words:
        assert re.search(word, str(err.value)), str(err.value)


def test_factors_that_do_not_fit_each_other_fail_at_build():
    with pytest.raises(ValueError, match=r"k9.*\b3\b.*\b2\b"):
        build_module("k9", {"lora_up.weight": rnd(6, 3), "lora_down.weight": rnd(2, 5)})
    with pytest.raises(ValueError, match="hada_t2"):
        build_module("k9", {"hada_w1_a": rnd(2, 6), "hada_w1_b": rnd(2, 5), "hada_w2_a": rnd(2, 6),
                            "hada_w2_b": rnd(2, 5), "hada_t1": rnd(2, 2, 3, 3)})
    with pytest.raises(ValueError, match="alpha"):
        build_module("k9", {"lora_up.weight": rnd(6, 2), "lora_down.weight": rnd(2, 5), "alpha": rnd(2)})


# ---- files written by LyCORIS itself ------------------------------------------------------------------------------

LYCORIS_CASES = ["locon-linear", "locon-conv3-tucker", "dora-columns", "loha-conv3-tucker", "lokr-conv3",
                 "diag-oft-rescaled", "boft", "ia3-conv-on-input", "norm", "glora-conv3"]


def lycoris_case(name):
    """(module class, layer, kwargs) of a LyCORIS 4.1.3's own modules, alpha = rank so that its module-level
    scale handling (which A1111 does not share) stays out of the comparison."""
    from lycoris.modules.boft import ButterflyOFTModule
    from lycoris.modules.diag_oft import DiagOFTModule
    from lycoris.modules.glora import GLoRAModule
    from lycoris.modules.ia3 import IA3Module
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule
    from lycoris.modules.norms import NormModule
    lin, conv, lin32 = torch.nn.Linear(16, 24), torch.nn.Conv2d(16, 24, 3, padding=1), torch.nn.Linear(16, 32)
    return {
        "locon-linear": (LoConModule, lin, dict(lora_dim=4, alpha=4)),
        "locon-conv3-tucker": (LoConModule, conv, dict(lora_dim=4, alpha=4, use_tucker=True)),
        "dora-columns": (LoConModule, conv, dict(lora_dim=4, alpha=4, weight_decompose=True, wd_on_out=False)),
        "loha-conv3-tucker": (LohaModule, conv, dict(lora_dim=4, alpha=4, use_tucker=True)),
        "lokr-conv3": (LokrModule, conv, dict(lora_dim=2, alpha=2, factor=4)),
        "diag-oft-rescaled": (DiagOFTModule, conv, dict(lora_dim=4, rescaled=True, constraint=1e-3)),
        "boft": (ButterflyOFTModule, lin32, dict(lora_dim=4)),
        "ia3-conv-on-input": (IA3Module, conv, dict(train_on_input=True)),
        "norm": (NormModule, torch.nn.LayerNorm(24), {}),
        "glora-conv3": (GLoRAModule, conv, dict(lora_dim=4, alpha=4)),
    }[name]


@pytest.mark.parametrize("name", LYCORIS_CASES)
def test_files_written_by_lycoris(name, tmp_path):
    """A state dict LyCORIS saves, through a real .safetensors file, gives the weight LyCORIS itself merges."""
    from safetensors.torch import load_file, save_file
    cls, layer, kwargs = lycoris_case(name)
    torch.manual_seed(LYCORIS_CASES.index(name))
    module = cls("lycoris_x", layer, multiplier=1.0, **kwargs)
    with torch.no_grad():
        for pname, p in module.named_parameters(recurse=False):
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if pname in ("dora_scale", "rescale") else 0.0))
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
    built = build_module(name, load_file(str(path)))
    w = layer.weight.detach()
    if name.startswith("dora"):
        expected = module.get_merged_weight(1.0)[0] - w
    else:
        expected = module.get_diff_weight(1.0)[0]
    close(built.weight_delta(w, 1.0), expected.reshape(w.shape))


@pytest.mark.parametrize("shape,up_shape,down_shape", [((6, 5), (6, 2), (2, 5)), ((6, 5, 3, 3), (6, 2, 1, 1),
                                                                                 (2, 5, 3, 3)),
                                                       ((6, 5, 1, 1), (6, 2), (2, 5))])
def test_lora_one_pass_apply_equals_weight_plus_delta(shape, up_shape, down_shape):
    """apply_to (addmm with the scale in the up factor) gives the weight_delta result, in float32 and from half
    factors; it declines modules it does not cover (DoRA, mid, multiplier 0)."""
    w = rnd(*shape)
    tensors = {"lora_up.weight": rnd(*up_shape).half(), "lora_down.weight": rnd(*down_shape).half(), "alpha": t(1)}
    m = build_module("k", tensors)
    close(m.apply_to(w, 0.7), w + m.weight_delta(w, 0.7))
    assert m.apply_to(w, 0) is None
    assert build_module("k", {**tensors, "dora_scale": rnd(shape[0], 1)}).apply_to(w, 1.0) is None
