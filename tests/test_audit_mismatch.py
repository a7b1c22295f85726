"""Photo <-> title mismatches on small synthetic catalogues: a swapped pair is found with the other listing named,
a colour swap within a category is found from the pixels, and the pixel colour histograms see the product, not the
white background."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from huse_core.audit.colours import colour_histograms, softmax_oof
from huse_core.audit.crossfit import out_of_fold
from huse_core.audit.mismatch import evidence, mismatch_findings, mismatch_scores

N, CLASSES, COLOURS = 400, 5, 3
RGB = np.array([[200, 30, 30], [30, 40, 190], [30, 160, 40]], np.uint8)  # red, blue, green


def _shop(seed: int = 0, tint: float = 0.3, own_part: float = 1.0):
    """Products of CLASSES kinds and COLOURS colours: embeddings = kind + `tint` colour + a per-product part shared
    by the photo and its title; photos are a coloured square on white. Returns (inputs, kinds, colours, pixels)."""
    rng = np.random.default_rng(seed)
    kind, colour = rng.integers(0, CLASSES, N), rng.integers(0, COLOURS, N)
    protos, tints = rng.normal(size=(CLASSES, 32)), rng.normal(size=(COLOURS, 32))
    own = rng.normal(size=(N, 32))
    image = 2 * protos[kind] + tint * tints[colour] + own_part * own + 0.5 * rng.normal(size=(N, 32))
    text = 2 * protos[kind] + tint * tints[colour] + own_part * own + 0.5 * rng.normal(size=(N, 32))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    pixels = np.full((N, 16, 16, 3), 255, np.uint8)
    pixels[:, 4:12, 4:12] = RGB[colour][:, None, None] + rng.integers(0, 20, (N, 1, 1, 3)).astype(np.uint8)
    heads = [SimpleNamespace(name="kind", kind="single", classes=[f"kind{k}" for k in range(CLASSES)]),
             SimpleNamespace(name="colour", kind="single", classes=["Red", "Blue", "Green"])]  # as RGB
    names = ["Red", "Blue", "Green"]
    products = pd.DataFrame({"id": [f"p{i}" for i in range(N)],
                             "title": [f"{names[c]} kind{k}" for k, c in zip(kind, colour)],
                             "kind": [f"kind{k}" for k in kind], "colour": [names[c] for c in colour]})
    inputs = SimpleNamespace(run=SimpleNamespace(heads=heads), products=products, image_emb=unit(image),
                             text_emb=unit(text))
    return inputs, kind, colour, pixels


def _swap(inputs, pixels, a: int, b: int) -> None:
    for arr in (inputs.image_emb, pixels):
        arr[[a, b]] = arr[[b, a]]


def _probs(inputs, kind, colour, pixels):
    """Photo side: K-fold heads on image_emb; title side: the title's own classes (a sure reading); pixels' colour."""
    p_image = dict(zip(["kind", "colour"], out_of_fold(inputs.image_emb, [kind, colour], [CLASSES, COLOURS])))
    p_title = {"kind": np.eye(CLASSES, dtype=np.float32)[kind] * 0.9 + 0.02,
               "colour": np.eye(COLOURS, dtype=np.float32)[colour] * 0.9 + 0.03}
    pix = ("colour", softmax_oof(np.sqrt(colour_histograms(pixels)), colour, COLOURS))
    return p_image, p_title, pix


def test_a_swapped_pair_is_found_with_the_other_listing_named():
    inputs, kind, colour, pixels = _shop()
    a = 3
    b = int(np.flatnonzero(kind != kind[a])[0])
    _swap(inputs, pixels, a, b)
    rows = mismatch_findings(inputs, *_probs(inputs, kind, colour, pixels))
    flagged = {r["row"]: r for r in rows}
    assert a in flagged and b in flagged, sorted(flagged)
    assert flagged[a]["others"] == f"p{b}" and flagged[b]["others"] == f"p{a}"
    assert f"listing p{b}" in flagged[a]["reason"] and "swapped" in flagged[a]["reason"]


def test_a_colour_swap_within_a_category_is_found_from_the_pixels():
    inputs, kind, colour, pixels = _shop(1, tint=0.0, own_part=0.0)  # towers blind to colour: only pixels see it
    a = 5
    b = int(np.flatnonzero((kind == kind[a]) & (colour != colour[a]))[0])
    _swap(inputs, pixels, a, b)
    p_image, p_title, pix = _probs(inputs, kind, colour, pixels)
    p_image["colour"] = np.full_like(p_image["colour"], 1 / COLOURS)
    scores = mismatch_scores(inputs, evidence(inputs, p_image, p_title, pix))
    top = set(np.argsort(-scores.score)[:8].tolist())
    assert {a, b} <= top, (a, b, sorted(top))
    assert scores.partner[a] == b and scores.mutual[a]
    without = mismatch_scores(inputs, evidence(inputs, p_image, p_title, None)).score  # the pixels are what found it
    assert not {a, b} <= set(np.argsort(-without)[:8].tolist())


def test_colour_histograms_see_the_product_not_the_background():
    px = np.full((2, 20, 20, 3), 255, np.uint8)
    px[0, 5:15, 5:15] = (220, 20, 20)
    px[1, 5:15, 5:15] = (20, 20, 220)
    h = colour_histograms(px)
    assert np.allclose(h[:, :-1].sum(1), 1)  # shares of the product's pixels only
    assert 0.2 < h[0, -1] < 0.3  # the product covers a quarter of the photo
    assert h[0, :-1].argmax() != h[1, :-1].argmax()  # red and blue fall in different bins
    white = colour_histograms(np.full((1, 8, 8, 3), 255, np.uint8))
    assert h.dtype == np.float32 and white.sum() == 0


def test_best_partner_is_the_swap_that_fixes_both_listings():
    from huse_core.audit import mismatch

    fit = np.array([[0.0, 0.1, 2.0, 0.0],  # photo 0 fits title 2 ...
                    [0.0, 1.0, 0.0, 0.0],
                    [3.0, 0.0, 0.5, 0.0],  # ... and photo 2 fits title 0
                    [0.0, 0.0, 1.0, 0.9]], np.float32)  # photo 3 fits title 2, but photo 2 doesn't fit title 3
    old = mismatch.BLOCK
    try:
        mismatch.BLOCK = 3  # the block boundary falls between the pair
        best, gain = mismatch.best_partners(fit)
    finally:
        mismatch.BLOCK = old
    assert best[0] == 2 and best[2] == 0 and np.isclose(gain[0], 2.0 + 3.0 - 0.0 - 0.5)
    assert gain[3] < 0 < gain[0]  # no swap helps listing 3


def test_a_shop_without_single_label_heads_gets_no_mismatch_scores():
    inputs, kind, colour, pixels = _shop()
    scores = mismatch_scores(inputs, evidence(inputs, {}, {}, None))
    assert scores.heads == [] and not scores.score.any() and (scores.partner == -1).all()


def _heads(*names):
    return SimpleNamespace(run=SimpleNamespace(heads=[SimpleNamespace(name=n, kind="single", classes=list("abc"))
                                                      for n in names]))


def test_a_sure_misreading_costs_the_same_however_unsure_the_catalogues_readings_are():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    eye = np.eye(3, dtype=np.float32)
    title = sure = eye[y] * 0.94 + 0.02
    unsure = eye[y] * 0.25 + 0.25  # the colour reader: the right class at 0.5 on most photos
    sure, unsure = sure.copy(), unsure.copy()
    sure[0] = unsure[0] = eye[(y[0] + 1) % 3] * 0.94 + 0.02  # photo 0 read surely as another class by both
    own = evidence(_heads("kind", "colour"), {"kind": sure, "colour": unsure},
                   {"kind": title, "colour": title}).own()
    assert abs(own[0, 0] - own[1, 0]) < 0.1, own[:, 0]  # the unsure head does not water the misreading down
    assert (own[:, 0] < np.median(own[:, 1:], 1) - 1).all()


def test_a_sure_colour_swap_outranks_single_category_misreadings_when_most_colours_read_unsure():
    inputs, kind, colour, pixels = _shop(2, tint=0.0, own_part=0.0)
    inputs.text_emb = inputs.image_emb = np.eye(CLASSES, 32, dtype=np.float32)[kind]  # the shared space: kind only
    rng = np.random.default_rng(2)
    a = 7
    b = int(np.flatnonzero((kind == kind[a]) & (colour != colour[a]))[0])
    shown = colour.copy()
    shown[[a, b]] = colour[[b, a]]  # the two photos swapped
    eye_k, eye_c = np.eye(CLASSES, dtype=np.float32), np.eye(COLOURS, dtype=np.float32)
    p_title = {"kind": eye_k[kind] * 0.9 + 0.02, "colour": eye_c[colour] * 0.9 + 0.03}
    p_image = {"kind": p_title["kind"].copy(), "colour": np.full((N, COLOURS), 1 / COLOURS, np.float32)}
    mild = rng.choice(np.setdiff1d(np.arange(N), [a, b]), 20, replace=False)
    p_image["kind"][mild] = eye_k[kind[mild]] * 0.35 + eye_k[(kind[mild] + 1) % CLASSES] * 0.35 + 0.06
    sure = mild[:5]  # five photos read surely as another kind (single misreadings, no partner)
    p_image["kind"][sure] = eye_k[(kind[sure] + 1) % CLASSES] * 0.8125 + 0.0375
    pix = eye_c[shown] * 0.25 + 0.25  # most photos' colour read unsure ...
    wrong = rng.choice(N, 40, replace=False)
    pix[wrong] = eye_c[(shown[wrong] + 1) % COLOURS] * 0.1 + 0.3
    pix[[a, b]] = eye_c[shown[[a, b]]] * 0.94 + 0.02  # ... the swapped pair's surely
    scores = mismatch_scores(inputs, evidence(inputs, p_image, p_title, ("colour", pix)))
    assert set(np.argsort(-scores.score)[:2].tolist()) == {a, b}
    assert scores.partner[a] == b and scores.mutual[a]


def test_a_swap_the_shared_space_memorised_is_found_from_the_title_words_the_photo_predicts():
    from huse_core.audit.words import photo_title_words

    styles = ["striped", "checked", "floral", "plain", "denim", "leather", "knit", "printed"]
    rng, n = np.random.default_rng(3), 200  # a shop small enough that every listing is searched for a partner
    kind, colour, style = rng.integers(0, CLASSES, n), rng.integers(0, COLOURS, n), rng.integers(0, len(styles), n)
    protos, style_protos = rng.normal(size=(CLASSES, 32)), rng.normal(size=(len(styles), 32))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    image = unit(2 * protos[kind] + 1.5 * style_protos[style] + 0.3 * rng.normal(size=(n, 32)))
    text = unit(2 * protos[kind] + 1.5 * style_protos[style] + 0.3 * rng.normal(size=(n, 32)))
    a = 11
    b = int(np.flatnonzero((kind == kind[a]) & (colour != colour[a]) & (style != style[a]))[0])
    image[[a, b]] = image[[b, a]]  # the photos swapped ...
    text[[a, b]] = unit(text[[a, b]] + 2 * image[[a, b]])  # ... and the towers trained on them: titles follow photos
    names = ["Red", "Blue", "Green"]
    products = pd.DataFrame({"id": [f"p{i}" for i in range(n)],
                             "title": [f"{names[c]} {styles[s]} kind{k}" for k, c, s in zip(kind, colour, style)]})
    heads = [SimpleNamespace(name="kind", kind="single", classes=[f"kind{k}" for k in range(CLASSES)]),
             SimpleNamespace(name="colour", kind="single", classes=names)]
    inputs = SimpleNamespace(run=SimpleNamespace(heads=heads), products=products, image_emb=image, text_emb=text)
    p_image = {"kind": out_of_fold(image, [kind], [CLASSES])[0], "colour": np.full((n, COLOURS), 1 / COLOURS)}
    p_title = {"kind": np.eye(CLASSES)[kind] * 0.9 + 0.02, "colour": np.eye(COLOURS)[colour] * 0.9 + 0.03}
    words = photo_title_words(inputs)
    scores = mismatch_scores(inputs, evidence(inputs, p_image, p_title, None, words))
    assert set(np.argsort(-scores.score)[:2].tolist()) == {a, b}
    assert scores.partner[a] == b and scores.mutual[a]
    without = mismatch_scores(inputs, evidence(inputs, p_image, p_title, None)).score
    assert not {a, b} <= set(np.argsort(-without)[:10].tolist())
