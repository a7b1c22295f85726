"""A seeded sample of a run's audit findings (10 a kind) drawn as one contact sheet, for a person to check by eye.

Used by `python bench/audit.py sample --run RUN [--findings CSV]`: writes OUT/sample.json and OUT/sheet-<kind>.png
(photo, and for duplicates the photo it repeats, beside the title, current -> suggested and the reason).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw


def sample(rows: pd.DataFrame, per_kind: int = 10, seed: int = 0) -> pd.DataFrame:
    """Up to `per_kind` findings of each kind, drawn at random (seeded) from each kind's top 500 by score."""
    parts = []
    for _, part in rows.groupby("kind", sort=False):
        top = part.sort_values("score", ascending=False).head(500)
        parts.append(top.sample(min(per_kind, len(top)), random_state=seed))
    return pd.concat(parts) if parts else rows.head(0)


def contact_sheet(run: str, out: Path, findings: str | None = None) -> None:
    from huse_core.audit import audit
    from huse_core.audit.inputs import load_inputs

    rows = pd.read_csv(findings, dtype=str).astype({"score": float}) if findings else pd.DataFrame(audit(run))
    picked = sample(rows)
    out.mkdir(parents=True, exist_ok=True)
    picked.to_json(out / "sample.json", orient="records", indent=1)
    images = dict(zip(*load_inputs(run, check_catalog=False).products[["id", "image"]].astype(str).T.to_numpy()))
    for kind, part in picked.groupby("kind"):
        sheet = Image.new("RGB", (900, 130 * len(part)), "white")
        draw = ImageDraw.Draw(sheet)
        for k, r in enumerate(part.itertuples()):
            y = 130 * k
            paths = [r.image] + ([images.get(str(r.suggested).removeprefix("duplicate of "), "")]
                                 if kind == "duplicates" else [])
            for j, p in enumerate(paths):
                try:
                    with Image.open(p) as im:
                        im.thumbnail((90, 120))
                        sheet.paste(im.convert("RGB"), (5 + 95 * j, y + 5))
                except OSError:
                    pass
            text = (f"[{k}] id {r.id}  score {float(r.score):.2f}\n{textwrap.shorten(str(r.title), 95)}\n"
                    f"{r.head}: {textwrap.shorten(str(r.current), 45)} -> {textwrap.shorten(str(r.suggested), 45)}\n"
                    + "\n".join(textwrap.wrap(str(r.reason), 95)[:2]))
            draw.multiline_text((200, y + 8), text, fill="black")
        sheet.save(out / f"sheet-{kind}.png")
    print(json.dumps({"sample": len(picked), "out": str(out)}, indent=1))
