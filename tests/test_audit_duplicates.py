"""Duplicate listings: look-alike items (shades, models, colours) are told from one item listed twice, and a
listing whose photo file another shares can still be found as a near copy."""

import numpy as np

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
