"""A deterministic synthetic shop catalogue (procedural product photos + noisy titles) for demos and tests.

Over 300 lines on purpose: most of it is data (article shapes, colours, title words) read top to bottom once.
"""

from __future__ import annotations

import colorsys
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

RGB = tuple[int, int, int]
Prim = tuple[str, str, object, float]  # (kind, role, unit coords, line width in units)


def _split(table: dict[str, str]) -> dict[str, list[str]]:
    return {k: v.split("|") for k, v in table.items()}


# masterCategory > subCategory > articleType; the order is the popularity rank (Zipf-ish weights).
TAXONOMY: dict[str, tuple[str, str]] = {
    "Tshirts": ("Apparel", "Topwear"), "Shirts": ("Apparel", "Topwear"), "Sneakers": ("Footwear", "Shoes"),
    "Handbags": ("Accessories", "Bags"), "Watches": ("Accessories", "Watches"), "Jeans": ("Apparel", "Bottomwear"),
    "Dresses": ("Apparel", "Dress"), "Sweaters": ("Apparel", "Topwear"), "Backpacks": ("Accessories", "Bags"),
    "Heels": ("Footwear", "Shoes"), "Shorts": ("Apparel", "Bottomwear"), "Flip Flops": ("Footwear", "Sandal"),
    "Caps": ("Accessories", "Headwear"), "Sandals": ("Footwear", "Sandal"), "Skirts": ("Apparel", "Bottomwear"),
    "Boots": ("Footwear", "Shoes")}
COLOURS: dict[str, RGB] = {
    "Red": (205, 35, 45), "Blue": (45, 105, 220), "Navy Blue": (25, 35, 95), "Green": (40, 145, 65),
    "Yellow": (245, 205, 35), "Black": (28, 28, 30), "White": (250, 250, 250), "Grey": (135, 135, 140),
    "Pink": (240, 135, 185), "Purple": (125, 50, 160), "Orange": (245, 125, 30), "Brown": (115, 70, 35)}
PATTERNS = ["Solid", "Striped", "Checked", "Dotted"]
GENDERS = ["Men", "Women", "Unisex", "Boys", "Girls"]
SEASONS = ["Summer", "Winter", "Fall", "Spring"]
COLUMNS = ["id", "image", "title", "gender", "masterCategory", "subCategory", "articleType",
           "baseColour", "pattern", "season"]

# Plausible gender mix per article (weights over GENDERS); skirts, dresses, heels, handbags are womenswear.
_GENDER_W = {
    "Tshirts": (40, 30, 5, 15, 10), "Shirts": (60, 25, 0, 15, 0), "Sweaters": (40, 40, 10, 5, 5),
    "Jeans": (45, 40, 0, 8, 7), "Shorts": (40, 30, 0, 15, 15), "Skirts": (0, 80, 0, 0, 20),
    "Dresses": (0, 80, 0, 0, 20), "Sneakers": (40, 30, 20, 10, 0), "Boots": (50, 40, 10, 0, 0),
    "Heels": (0, 95, 0, 0, 5), "Sandals": (30, 50, 0, 10, 10), "Flip Flops": (30, 30, 40, 0, 0),
    "Handbags": (0, 95, 5, 0, 0), "Backpacks": (20, 10, 60, 5, 5), "Caps": (30, 10, 50, 10, 0),
    "Watches": (50, 40, 10, 0, 0)}
_COLOUR_BOOST = {"Jeans": ("Blue", "Navy Blue", "Black", "Grey"), "Heels": ("Black", "Red", "Pink"),
                 "Watches": ("Black", "Brown", "Grey"), "Boots": ("Black", "Brown"), "Handbags": ("Brown", "Black")}
_SEASON_W = {"Sweaters": (2, 50, 35, 13), "Boots": (2, 55, 35, 8), "Shorts": (60, 2, 8, 30),
             "Flip Flops": (65, 2, 8, 25), "Sandals": (55, 3, 12, 30), "Dresses": (40, 10, 20, 30)}

BRANDS = ["Urbano", "Nordvik", "Kaya Studio", "Bellmont", "Rivora", "Tessuto", "Kestrel", "Mava", "Oakline",
          "Solenne", "Brixby", "Halden & Co", "Pampa", "Zevo", "Lumo", "Ardent", "Fjellby", "Casa Vela", "Nomadik",
          "Quillon", "Tandem", "Verano", "Wrenfield", "Yuzu", "Marlo", "Ostra", "Peregrine", "Saffi", "Drift Lab",
          "Gallo Rosso", "Kinto", "Ember & Ash", "Monsoon Row", "Atlas Goods"]
_GENDER_WORDS = _split({"Men": "Men|Men's|Mens", "Women": "Women|Women's|Womens|Ladies", "Unisex": "Unisex||",
                        "Boys": "Boys|Boy's|Kids", "Girls": "Girls|Girl's|Kids"})
_COLOUR_WORDS = _split({  # the first word is the usual one; the rest are occasional variants
    "Red": "Red|Scarlet", "Blue": "Blue|Royal Blue", "Navy Blue": "Navy Blue|Navy|Dark Blue",
    "Green": "Green|Forest Green", "Yellow": "Yellow|Mustard", "Black": "Black|Jet Black", "White": "White|Off White",
    "Grey": "Grey|Gray|Charcoal", "Pink": "Pink|Rose", "Purple": "Purple|Violet", "Orange": "Orange",
    "Brown": "Brown|Tan|Chocolate"})
_PATTERN_WORDS = _split({"Solid": "Solid|Plain", "Striped": "Striped|Stripe|Pinstripe",
                         "Checked": "Checked|Check|Plaid|Checkered", "Dotted": "Polka Dot|Dotted|Spotted"})
_ARTICLE_WORDS = _split({
    "Tshirts": "T-Shirt|Tee|Tshirt|Polo T-Shirt|Crew Neck Tee",
    "Shirts": "Shirt|Casual Shirt|Formal Shirt|Oxford Shirt",
    "Sweaters": "Sweater|Pullover|Jumper|Knit Sweater", "Jeans": "Jeans|Denim Jeans|Skinny Jeans|Straight Jeans",
    "Shorts": "Shorts|Bermuda Shorts|Denim Shorts", "Skirts": "Skirt|Midi Skirt|A-Line Skirt|Mini Skirt",
    "Dresses": "Dress|Maxi Dress|Midi Dress|Sundress", "Sneakers": "Sneakers|Trainers|Casual Shoes|Sports Shoes",
    "Boots": "Boots|Ankle Boots|Chelsea Boots", "Heels": "Heels|Pumps|Stilettos|Heeled Shoes",
    "Sandals": "Sandals|Strappy Sandals|Floaters", "Flip Flops": "Flip Flops|Flip-Flops|Slippers",
    "Handbags": "Handbag|Tote Bag|Shoulder Bag|Satchel", "Backpacks": "Backpack|Rucksack|Laptop Bag|School Bag",
    "Caps": "Cap|Baseball Cap|Snapback", "Watches": "Watch|Analog Watch|Wrist Watch|Chronograph"})
_STYLE_WORDS = _split({
    "Apparel": "Slim Fit|Regular Fit|Casual|Classic|Cotton|Essential|Sports|Premium|Relaxed|Vintage|Basic|Printed",
    "Footwear": "Lightweight|Leather|Classic|Sports|Comfort|Casual|Suede|Everyday",
    "Accessories": "Leather|Classic|Travel|Premium|Minimalist|Canvas|Everyday"})
# {b}rand {g}ender {h}gender-after-"for" {c}olour {p}attern {s}tyle {a}rticle
_TEMPLATES = ["{b} {g} {c} {p} {s} {a}", "{b} {s} {c} {p} {a} for {h}", "{g} {c} {p} {a} by {b}",
              "{b} {g} {s} {p} {a} - {c}", "{b} {c} {a}", "{s} {b} {g} {p} {c} {a}"]


# --- silhouettes: primitives in a unit box (y down); "body" takes colour+pattern, the rest are details ---
def _pair(kind: str, role: str, pts: list, w: float = 0) -> list[Prim]:
    """A left/right symmetric pair (cuffs, collar tips, straps)."""
    return [(kind, role, pts, w), (kind, role, [(1 - x, y) for x, y in pts], w)]


def _sole(x0: float, x1: float) -> list[Prim]:
    """A foot-shaped sole seen from above: wide round toe, tapering to a narrower round heel."""
    w, c = x1 - x0, (x0 + x1) / 2
    return [("ell", "body", (x0, .03, x1, .5), 0), ("ell", "body", (c - .38 * w, .6, c + .38 * w, .97), 0),
            ("poly", "body", [(x0 + .01, .28), (x1 - .01, .28), (c + .38 * w, .79), (c - .38 * w, .79)], 0)]


def _flipflop(c: float) -> list[Prim]:
    return _sole(c - .15, c + .15) + [("line", "shade", [(c - .15, .42), (c, .14), (c + .15, .42)], .04)]


SHAPES: dict[str, list[Prim]] = {
    "Tshirts": [("poly", "body", [(.36, .1), (.64, .1), (.86, .2), (.95, .4), (.77, .46), (.73, .36), (.73, .92),
                (.27, .92), (.27, .36), (.23, .46), (.05, .4), (.14, .2)], 0), ("ell", "hole", (.41, .04, .59, .2), 0)],
    "Shirts": [("poly", "body", [(.37, .08), (.63, .08), (.8, .14), (.92, .82), (.8, .84), (.72, .4), (.72, .95),
               (.28, .95), (.28, .4), (.2, .84), (.08, .82), (.2, .14)], 0),
               *_pair("poly", "shade", [(.9, .74), (.92, .82), (.8, .84), (.79, .76)]),  # cuffs
               *_pair("poly", "shade", [(.37, .06), (.5, .2), (.44, .27), (.33, .12)]),  # collar
               ("line", "line", [(.5, .21), (.5, .95)], .012),
               *[("ell", "line", (.485, y, .515, y + .03), 0) for y in (.32, .47, .62, .77)]],
    "Sweaters": [("poly", "body", [(.34, .1), (.66, .1), (.84, .16), (.97, .8), (.82, .86), (.76, .42), (.77, .94),
                 (.23, .94), (.24, .42), (.18, .86), (.03, .8), (.16, .16)], 0),
                 ("poly", "shade", [(.235, .85), (.765, .85), (.77, .94), (.23, .94)], 0),  # ribbed hem
                 *_pair("poly", "shade", [(.95, .72), (.97, .8), (.82, .86), (.8, .77)]),
                 ("ell", "shade", (.36, .03, .64, .19), 0), ("ell", "hole", (.41, .06, .59, .16), 0)],
    "Jeans": [("poly", "body", [(.27, .06), (.73, .06), (.77, .96), (.54, .96), (.5, .3), (.46, .96), (.23, .96)], 0),
              ("line", "line", [(.27, .13), (.73, .13)], .012), ("line", "line", [(.5, .13), (.5, .28)], .012),
              *_pair("line", "line", [(.3, .14), (.38, .24)], .01)],
    "Shorts": [("poly", "body", [(.2, .2), (.8, .2), (.88, .72), (.55, .76), (.5, .45), (.45, .76), (.12, .72)], 0),
               ("line", "line", [(.2, .28), (.8, .28)], .012), ("line", "line", [(.5, .28), (.5, .42)], .012),
               *_pair("line", "line", [(.14, .66), (.46, .7)], .01)],
    "Skirts": [("poly", "body", [(.34, .15), (.66, .15), (.86, .85), (.14, .85)], 0),
               ("poly", "shade", [(.34, .15), (.66, .15), (.675, .22), (.325, .22)], 0),
               *[("line", "line", [(.5 + d * .3, .22), (.5 + d, .85)], .008) for d in (-.2, -.07, .07, .2)]],
    "Dresses": [("poly", "body", [(.38, .04), (.43, .04), (.46, .16), (.54, .16), (.57, .04), (.62, .04), (.65, .38),
                (.6, .44), (.84, .96), (.16, .96), (.4, .44), (.35, .38)], 0),
                ("poly", "shade", [(.35, .38), (.65, .38), (.6, .45), (.4, .45)], 0)],
    "Sneakers": [("poly", "body", [(.06, .56), (.3, .48), (.46, .36), (.6, .33), (.64, .42), (.84, .52), (.94, .6),
                 (.94, .68), (.06, .68)], 0), ("rrect", "white", (.04, .66, .96, .77), .04),  # white sole
                 ("line", "line", [(.22, .66), (.3, .52), (.55, .58), (.7, .5)], .012),
                 *[("line", "white", [(.4 + k, .43 - k / 2.5), (.47 + k, .47 - k / 2.5)], .015) for k in (0, .05, .1)]],
    "Boots": [("poly", "body", [(.28, .06), (.6, .06), (.62, .56), (.86, .68), (.9, .8), (.26, .8)], 0),
              ("rrect", "dark", (.24, .79, .92, .86), .02), ("poly", "dark", [(.26, .84), (.42, .84), (.41, .93),
              (.27, .93)], 0), ("poly", "shade", [(.28, .06), (.6, .06), (.6, .14), (.28, .14)], 0)],
    "Heels": [("poly", "body", [(.06, .74), (.08, .64), (.3, .58), (.56, .56), (.74, .34), (.9, .28), (.92, .36),
              (.82, .44), (.58, .7), (.22, .76)], 0), ("line", "line", [(.32, .6), (.56, .57), (.76, .36)], .015),
              ("poly", "body", [(.83, .4), (.91, .36), (.885, .9), (.86, .9)], 0)],  # the spike heel
    "Sandals": [*_sole(.28, .72),
                *[("rrect", "shade", (.25, y, .75, y + .08), .02) for y in (.18, .36)],
                ("rrect", "shade", (.27, .7, .73, .75), .01), ("rrect", "dark", (.68, .69, .75, .76), .01)],
    "Flip Flops": _flipflop(.3) + _flipflop(.7),  # shown as a pair: two narrow soles with a V thong each
    "Handbags": [("ell", "body", (.3, .08, .7, .6), 0), ("ell", "hole", (.37, .15, .63, .6), 0),
                 ("poly", "body", [(.16, .38), (.84, .38), (.92, .92), (.08, .92)], 0),
                 ("line", "line", [(.14, .52), (.86, .52)], .012), ("rrect", "dark", (.45, .48, .55, .57), .01)],
    "Backpacks": [("ell", "body", (.42, .01, .58, .14), 0), ("ell", "hole", (.45, .04, .55, .14), 0),
                  *_pair("poly", "body", [(.14, .2), (.24, .2), (.22, .86), (.12, .86)]),
                  ("rrect", "body", (.22, .08, .78, .94), .14), ("rrect", "shade", (.3, .55, .7, .88), .06),
                  ("line", "line", [(.3, .3), (.7, .3)], .012)],
    "Caps": [("chord", "body", (.12, .2, .72, .84), 0), ("poly", "body", [(.55, .46), (.96, .52), (.93, .59),
             (.55, .57)], 0), ("poly", "shade", [(.12, .47), (.72, .47), (.72, .53), (.12, .53)], 0),
             ("ell", "shade", (.39, .17, .45, .23), 0), ("line", "line", [(.3, .48), (.42, .22), (.55, .48)], .01)],
    "Watches": [("rrect", "body", (.4, .02, .6, .98), .04), ("ell", "body", (.27, .29, .73, .75), 0),
                ("rrect", "body", (.72, .48, .79, .56), .01), ("ell", "white", (.33, .35, .67, .69), 0),  # dial
                ("line", "dark", [(.5, .52), (.5, .4)], .02), ("line", "dark", [(.5, .52), (.6, .56)], .02),
                *[("ell", "dark", (.485, y, .515, y + .03), 0) for y in (.82, .87, .92)]]}


def _mix(c: RGB, to: RGB, t: float) -> RGB:
    return tuple(round(a + (b - a) * t) for a, b in zip(c, to))  # type: ignore[return-value]


def _lum(c: RGB) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _draw(d: ImageDraw.ImageDraw, kind: str, xy, fill, width: int) -> None:
    {"poly": lambda: d.polygon(xy, fill=fill), "ell": lambda: d.ellipse(xy, fill=fill),
     "chord": lambda: d.chord(xy, 180, 360, fill=fill),  # the top half: a cap's crown
     "rrect": lambda: d.rounded_rectangle(xy, radius=width, fill=fill),
     "line": lambda: d.line(xy, fill=fill, width=width, joint="curve")}[kind]()


def _pale(rng: np.random.Generator) -> np.ndarray:
    # Tinted and at most 90% bright: never near-white, so White products still stand out.
    hsv = (rng.random(), rng.uniform(0.08, 0.22), rng.uniform(0.82, 0.9))
    return np.array(colorsys.hsv_to_rgb(*hsv), np.float32) * 255


def _background(s: int, rng: np.random.Generator) -> Image.Image:
    """A pale random colour, sometimes a linear gradient in a random direction."""
    c1 = _pale(rng)
    if rng.random() >= 0.4:
        return Image.new("RGB", (s, s), tuple(int(v) for v in c1.round()))
    c2, a = _pale(rng), rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(0, 1, s, dtype=np.float32)
    t = ramp[None, :] * np.float32(np.cos(a)) + ramp[:, None] * np.float32(np.sin(a))
    t = (t - t.min()) / (t.max() - t.min())
    return Image.fromarray((c1 + t[..., None] * (c2 - c1) + 0.5).astype(np.uint8))


def _pattern_layer(s: int, rgb: RGB, pattern: str, rng: np.random.Generator) -> Image.Image:
    """The product's fabric: base colour with stripes/checks/dots in a lighter or darker tone of it."""
    fg = Image.new("RGB", (s, s), rgb)
    if pattern == "Solid":
        return fg
    d = ImageDraw.Draw(fg)
    c = _mix(rgb, (0, 0, 0), 0.45) if _lum(rgb) > 140 else _mix(rgb, (255, 255, 255), 0.55)
    p = s * rng.uniform(0.07, 0.11)
    ph, n = rng.uniform(0, p), int(s / p) + 2
    vertical = rng.random() < 0.5
    for i in range(-1, n):
        a = i * p + ph
        if pattern == "Striped":  # stripes cover ~30%, checks ~29%, dots ~13%: the base colour dominates
            d.rectangle((a, 0, a + 0.3 * p, s) if vertical else (0, a, s, a + 0.3 * p), fill=c)
        elif pattern == "Checked":
            d.rectangle((a, 0, a + 0.16 * p, s), fill=c)
            d.rectangle((0, a, s, a + 0.16 * p), fill=c)
        else:
            for k in range(-1, n):
                x, r = k * p + ph + (p / 2 if i % 2 else 0), 0.2 * p
                d.ellipse((x - r, a - r, x + r, a + r), fill=c)
    return fg


def render_product(article: str, rgb: RGB, pattern: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """One product photo: silhouette in colour+pattern, outlined, scaled/rotated/shifted on a pale background."""
    s = 2 * size  # drawn at 2x then box-downsampled: cheap anti-aliasing
    scale = rng.uniform(0.6, 1.0) * 0.9 * s
    sx, sy = scale * rng.uniform(0.92, 1.08), scale * rng.uniform(0.92, 1.08)  # mild per-product proportions
    ox, oy = (s - sx) / 2, (s - sy) / 2
    mask, fg = Image.new("L", (s, s), 0), _pattern_layer(s, rgb, pattern, rng)
    md, fd = ImageDraw.Draw(mask), ImageDraw.Draw(fg)
    dark = _lum(rgb) < 60
    line = _mix(rgb, (255, 255, 255), 0.35) if dark else _mix(rgb, (0, 0, 0), 0.5)
    tones = {"shade": _mix(rgb, (255, 255, 255), 0.25) if dark else _mix(rgb, (0, 0, 0), 0.28),
             "white": (238, 238, 232), "dark": (45, 42, 40), "line": line}
    for kind, role, pts, w in SHAPES[article]:
        corners = pts if kind in ("poly", "line") else [pts[:2], pts[2:]]  # type: ignore[index]
        xy = [(ox + x * sx, oy + y * sy) for x, y in corners]  # type: ignore[union-attr]
        width = max(1, round(w * scale))
        if role != "line":
            _draw(md, kind, xy, 0 if role == "hole" else 255, width)
        if role in tones:
            _draw(fd, kind, xy, tones[role], width)
    # An inner outline in a darker tone (grey for White items) keeps edges visible on any background.
    eroded = mask.filter(ImageFilter.BoxBlur(2)).point(lambda v: 255 if v >= 250 else 0)  # cheaper than MinFilter
    edge = ImageChops.subtract(mask, eroded)
    fg.paste((95, 95, 95) if _lum(rgb) > 230 else _mix(rgb, (0, 0, 0), 0.5), mask=edge)
    fg.putalpha(mask)
    fg = fg.rotate(rng.uniform(-15, 15), Image.NEAREST)  # nearest at 2x: 20x faster than bilinear
    # Shift randomly but keep the product fully inside the frame with a small margin.
    x0, y0, x1, y1 = fg.getchannel("A").getbbox() or (0, 0, s, s)
    m = int(0.04 * s)
    dx = int(rng.integers(min(m - x0, s - m - x1), max(m - x0, s - m - x1) + 1))
    dy = int(rng.integers(min(m - y0, s - m - y1), max(m - y0, s - m - y1) + 1))
    bg = _background(s, rng)
    bg.paste(fg, (dx, dy), fg)
    img = np.asarray(bg.reduce(2), np.float32)
    img = img + rng.normal(0, rng.uniform(1.5, 4.0), img.shape).astype(np.float32)  # mild sensor noise
    return Image.fromarray(np.clip(img.round(), 0, 255).astype(np.uint8))


def _title(r: random.Random, article: str, gender: str, colour: str, pattern: str) -> str:
    """A shop-style title: informative words in varying order, synonyms, and occasional noise."""
    cw = _COLOUR_WORDS[colour]
    pw = "" if pattern == "Solid" and r.random() < 0.8 else r.choice(_PATTERN_WORDS[pattern])
    g = r.choice(_GENDER_WORDS[gender])
    words = {"b": r.choice(BRANDS), "g": g, "h": g.replace("'s", ""), "p": pw,
             "c": "" if r.random() < 0.05 else (cw[0] if r.random() < 0.7 else r.choice(cw)),
             "s": "" if r.random() < 0.3 else r.choice(_STYLE_WORDS[TAXONOMY[article][0]]),
             "a": r.choice(_ARTICLE_WORDS[article])}
    toks = r.choice(_TEMPLATES).format(**words).split()
    toks = [t for i, t in enumerate(toks) if t not in ("for", "by", "-") or 0 < i < len(toks) - 1]
    if r.random() < 0.06 and len(toks) > 3:  # a dropped word
        del toks[r.randrange(len(toks))]
    if r.random() < 0.05:  # a typo: swap or drop a letter
        i = r.randrange(len(toks))
        if len(t := toks[i]) >= 4:
            k = r.randrange(1, len(t) - 1)
            toks[i] = t[:k] + t[k + 1] + t[k] + t[k + 2:] if r.random() < 0.5 else t[:k] + t[k + 1:]
    title = " ".join(toks)
    return title.lower() if r.random() < 0.05 else title


def _article_counts(n: int) -> dict[str, int]:
    """Zipf-ish shares with a floor (each leaf >= 2.5%), rounded by largest remainder to sum to n."""
    z = 1.0 / np.arange(1, len(TAXONOMY) + 1) ** 0.9
    raw = (0.6 * z / z.sum() + 0.4 / len(TAXONOMY)) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return dict(zip(TAXONOMY, counts.tolist()))


def generate_demo(out_dir: str | Path, n_products: int = 3000, seed: int = 0, image_size: int = 96,
                  progress: bool = True, planted: int | None = None) -> Path:
    """Write out_dir/metadata.csv and out_dir/images/<id>.png; return the CSV path.

    planted: catalogue errors of each kind the audit finds (data.planted; listed in planted.json); None = a few
    from AUTO_FROM products on, none in smaller (test) shops."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    r = random.Random(seed)
    articles = [a for a, c in _article_counts(n_products).items() for _ in range(c)]
    r.shuffle(articles)
    names = list(COLOURS)
    rows = []
    for i, article in enumerate(articles):
        boost = _COLOUR_BOOST.get(article, ())
        colour = r.choices(names, [4 if c in boost else 1 for c in names])[0]
        solid = 0.55 if TAXONOMY[article][0] == "Apparel" else 0.85
        pattern = r.choices(PATTERNS, [solid, (1 - solid) * 0.4, (1 - solid) * 0.3, (1 - solid) * 0.3])[0]
        gender = r.choices(GENDERS, _GENDER_W[article])[0]
        season = r.choices(SEASONS, _SEASON_W.get(article, (1, 1, 1, 1)))[0]
        pid = 10000 + i
        rows.append({"id": pid, "image": f"images/{pid}.png", "title": _title(r, article, gender, colour, pattern),
                     "gender": gender, "masterCategory": TAXONOMY[article][0], "subCategory": TAXONOMY[article][1],
                     "articleType": article, "baseColour": colour, "pattern": pattern, "season": season})

    def write_image(row: dict) -> None:
        rng = np.random.default_rng([seed, row["id"]])  # per-product stream: order-free, so threads are safe
        base = np.array(COLOURS[row["baseColour"]]) + rng.integers(-10, 11, 3)  # small per-product jitter
        rgb: RGB = tuple(np.clip(base, 0, 255).tolist())  # type: ignore[assignment]
        tmp = out / (row["image"] + ".tmp")
        render_product(row["articleType"], rgb, row["pattern"], rng, image_size).save(tmp, "PNG", compress_level=1)
        os.replace(tmp, out / row["image"])

    # Threads overlap well here: PNG encoding and most Pillow/numpy work release the GIL.
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        jobs = pool.map(write_image, rows)
        for _ in tqdm(jobs, total=len(rows), desc="demo images", disable=not progress):
            pass
    csv = out / "metadata.csv"
    tmp = csv.with_name(csv.name + ".tmp")
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
    from .planted import AUTO_FROM, PER_KIND, plant_errors

    planted = (PER_KIND if n_products >= AUTO_FROM else 0) if planted is None else planted
    if planted:
        plant_errors(tmp, planted, seed)
    os.replace(tmp, csv)  # the CSV appears last and whole: a reader never sees a partial catalogue
    return csv
