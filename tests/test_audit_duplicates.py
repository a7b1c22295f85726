"""Duplicate listings: look-alike items (shades, models, colours) are told from one item listed twice, a cropped
copy lines up with its source pixel by pixel, clusters do not chain, and a listing whose photo file another shares
can still be found as a near copy. (End to end on a trained shop: tests/test_audit.py.)"""

import numpy as np
import pandas as pd

from huse_core.audit.duplicates import flagged
from huse_core.audit.variants import distinct_words, label_conflicts, title_conflicts, title_words

FILLER = [f"Nike Men Black Shoes {i % 3}" for i in range(150)] + ["Puma Men Graphic Tee"] * 150 + \
         ["Lakme Absolute Matte Lipstick"] * 100


def _conflicts(pairs: list[tuple[str, str]]) -> np.ndarray:
    titles = FILLER + [t for pair in pairs for t in pair]
    a = np.arange(len(FILLER), len(titles), 2)
    return title_conflicts(titles, a, a + 1)


def test_titles_naming_other_shades_or_models_are_two_items():
    why = _conflicts([("Lakme Absolute Matte Lipstick 62", "Lakme Absolute Matte Lipstick 202"),
                      ("Puma Men Dizzy Graphic Tee", "Puma Men Bonn Graphic Tee")])
    assert why[0] == "titles name different items (62 / 202)", why
    assert why[1] == "titles name different items (dizzy / bonn)", why


def test_a_reworded_second_listing_is_not_two_items():
    """Re-cased, a word moved, a tag added, a common word swapped for another common word: no conflict."""
    why = _conflicts([("Puma Men Dizzy Graphic Tee", "PUMA Men Graphic Dizzy Tee - New"),
                      ("Nike Men Black Shoes", "nike black men graphic shoes (Pack of 1)"),
                      ("Lakme Absolute Matte Lipstick 62", "Lakme Matte Absolute Lipstick 62 | Original")])
    assert list(why) == ["", "", ""], why


def test_titles_led_by_two_brands_are_two_items_but_label_words_are_no_brand():
    titles = FILLER + ["Nike Men Black Backpack", "Puma Men Black Backpack"] + ["Men Black Socks"] * 6 + \
        ["Men Black Socks", "Women Black Socks"]
    n = len(FILLER)
    a, b = np.array([n, n + 8]), np.array([n + 1, n + 9])
    why = title_conflicts(titles, a, b, labels=frozenset({"men", "women"}))
    assert list(why) == ["titles name different items (nike / puma)", ""], why


def test_distinct_words_are_numbers_and_rare_words():
    words = title_words(FILLER + ["Puma Men Dizzy Graphic Tee"])
    distinct = distinct_words(words, share=0.005)
    assert {"dizzy", "0", "1"} <= distinct and not {"men", "puma", "graphic", "shoes"} & distinct


def test_listings_filed_differently_are_two_items():
    codes = {"colour": np.array([0, 1, 0, -1]), "type": np.array([2, 2, 3, 2])}
    why = label_conflicts(codes, np.array([0, 0, 1]), np.array([1, 2, 3]))
    assert list(why) == ["filed under different colour", "filed under different type", ""]


def test_a_near_copy_of_a_listing_whose_photo_file_is_shared_is_flagged():
    """Rows 0 and 1 share a photo file; row 2 is a near copy of row 0. The byte-identical pair must not win row 0's
    best-partner contest, or the copy would never be reported."""
    pairs = {"a": np.array([0, 0, 1]), "b": np.array([1, 2, 2]), "score": np.array([1.0, 0.99, 0.98]),
             "exact": np.array(["same photo bytes", "", ""], dtype=object)}
    assert list(flagged(pairs, threshold=0.8)) == [True, True, False]


def test_duplicate_clusters_do_not_chain_through_look_alikes():
    """A row of look-alikes (0-1, 1-2, 2-3 all over the threshold) is two pairs, not one cluster of four."""
    from huse_core.audit.duplicates import duplicate_findings

    products = pd.DataFrame({"id": ["p0", "p1", "p2", "p3"]})
    inputs = type("Inputs", (), {"products": products, "__len__": lambda self: 4})()
    pairs = {"a": np.array([0, 1, 2]), "b": np.array([1, 2, 3]), "score": np.array([0.95, 0.85, 0.95]),
             "exact": np.array(["", "", ""], dtype=object), "photo": np.ones(3), "pixels": np.ones(3),
             "title": np.ones(3)}
    rows = duplicate_findings(inputs, pairs, threshold=0.8)
    assert sorted((r["current"], r["suggested"]) for r in rows) == [("p1", "duplicate of p0"),
                                                                    ("p3", "duplicate of p2")]


def _garment(colour: tuple[int, int, int], size=(60, 80)):
    """A synthetic product shot: a patterned garment in `colour` on white."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    w, h = size
    d.polygon([(w * .2, h * .1), (w * .8, h * .1), (w * .95, h * .35), (w * .8, h * .4), (w * .78, h * .95),
               (w * .22, h * .95), (w * .2, h * .4), (w * .05, h * .35)], fill=colour)
    for y in range(int(h * .2), int(h * .9), 9):  # stripes: detail a crop has to line up
        d.line([(w * .25, y), (w * .75, y + 4)], fill=tuple(c // 2 for c in colour), width=2)
    d.ellipse([w * .42, h * .15, w * .58, h * .25], fill="white")
    return im


def test_a_cropped_copy_is_near_its_source_and_a_colour_variant_is_not():
    """The aligned pixel difference: an off-centre crop, resized and re-encoded, lines up with its source; the same
    garment in another colour (a colour variant shot alike) does not."""
    import io

    from PIL import Image

    from huse_core.audit.pixels import aligned_difference, thumbnails
    from huse_core.data.images import decode_image

    src, variant = _garment((200, 40, 40)), _garment((40, 60, 190))
    w, h = src.size
    crop = src.crop((6, 3, w - 2, h - 7)).resize((70, 88))
    buf = io.BytesIO()
    crop.save(buf, "JPEG", quality=50)
    crop = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    photos = [src, crop, variant]
    thumbs = thumbnails(np.stack([decode_image(p, 80) for p in photos]), np.array([p.size for p in photos]))
    diff = aligned_difference(thumbs, np.array([0, 0]), np.array([1, 2]))[:, 0]
    assert diff[0] < 0.1 and diff[1] > 3 * diff[0], diff
