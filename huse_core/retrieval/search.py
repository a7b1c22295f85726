"""The Searcher: cross-modal search, classification, zero-shot labels, neighbours, added products and the map."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..run import Run, check_weight, load_run, mix
from .embed import ADDED_SPLIT, products_frame
from .index import load_index, top_matches
from .knn import exact_search
from .layout import IndexMissingError, StaleIndexError, build_folder, index_dir, load_map
from .map import extend_map
from .store import check_item, predict_labels, read_added, save_photo, write_added

__all__ = ["Hit", "IndexMissingError", "Searcher", "StaleIndexError"]
TARGETS = ("image", "text")


@dataclass
class Hit:
    """One search result."""

    id: str
    title: str
    image: str  # absolute path of the product photo
    score: float  # cosine similarity to the query
    modality: str  # "image" | "text": which of the product's embeddings matched
    labels: dict[str, str]  # head -> class (multi-label heads: "a|b")
    added: bool = False  # True for products added after the index build


@dataclass
class _State:
    """What add_products replaces in one assignment, so a concurrent search sees one consistent snapshot."""

    products: pd.DataFrame  # index rows, then added rows not yet in the index
    n_index: int
    delta_emb: dict[str, np.ndarray]  # "image"/"text" -> (n_delta, D)
    n_added: int  # every product ever added, folded into the index or not
    row_of: dict[str, int] = field(init=False)
    values: dict[str, np.ndarray] = field(init=False)  # column -> object array, for hits and filters
    map_frame: pd.DataFrame | None = field(default=None, init=False)  # the map with added products placed
    masks: dict = field(default_factory=dict, init=False)  # (head, class) -> rows with that label

    def __post_init__(self):
        self.row_of = {pid: i for i, pid in enumerate(self.products["id"])}
        self.values = {c: self.products[c].to_numpy(dtype=object) for c in self.products.columns}


class Searcher:
    """Search a run's index. Open with `Searcher.open(run_dir)`; safe to share between threads."""

    def __init__(self, run: Run, manifest: dict, image_emb, text_emb, products: pd.DataFrame, forests: dict,
                 backend: str):
        self.run, self.manifest, self.backend, self._forests = run, manifest, backend, forests
        self.heads: list[dict] = run.heads
        self.index_dir = index_dir(run.run_dir)
        self._build_dir = build_folder(self.index_dir, manifest)  # this build's files, even after a newer one
        self._emb = {"image": image_emb, "text": text_emb}
        self._index_products = products
        self._lock = threading.Lock()  # serialises add_products; searches read self._state without locking
        self._map: pd.DataFrame | None = None
        self._state = self._make_state(read_added(self.index_dir, run.dim))

    @classmethod
    def open(cls, run_dir: str | Path, backend: str = "auto") -> Searcher:
        """Load a run and its index (embeddings and Annoy forests memory-mapped) and the added products.

        backend: "annoy", "exact", or "auto" = exact below EXACT_BELOW products, else Annoy.
        """
        run = load_run(run_dir)
        manifest, products, image_emb, text_emb, forests, backend = load_index(run, backend)
        return cls(run, manifest, image_emb, text_emb, products, forests, backend)

    # -- state -----------------------------------------------------------------------------------------------

    def _make_state(self, added: tuple) -> _State:
        table, image_emb, text_emb = added
        live = ~table["id"].isin(set(self._index_products["id"])).to_numpy(dtype=bool)  # not folded in yet
        delta = products_frame(table[live], self.heads, added=True)
        products = pd.concat([self._index_products, delta], ignore_index=True)
        return _State(products, len(self._index_products), {"image": image_emb[live], "text": text_emb[live]},
                      len(table))

    @property
    def products(self) -> pd.DataFrame:
        """id, title, image, split, one column per head, added: the catalogue, then added products."""
        return self._state.products

    @property
    def fingerprint(self) -> str:
        """Changes whenever results can: model, index build, or the number of added products."""
        return f"{self.run.fingerprint}-{self.manifest['build_id']}-{self._state.n_added}"

    # -- queries ---------------------------------------------------------------------------------------------

    def encode_image(self, image) -> np.ndarray:
        """(D,) unit image embedding of a path, bytes, PIL image or uint8 array; ImageError if unreadable."""
        return self.run.encode_image(image)

    def query_vector(self, text: str | None = None, image=None, image_weight: float = 0.5) -> np.ndarray:
        """Unit query: the image's or the text's embedding, or with both, normalise(w * image + (1 - w) * text)."""
        return self.run.query_vector(text, image, image_weight)

    def _row(self, state: _State, product_id: str) -> int:
        row = state.row_of.get(str(product_id))
        if row is None:
            raise ValueError(f"unknown product id {product_id!r}; ids are those of the catalogue and added products")
        return row

    def _product_emb(self, state: _State, row: int, modality: str) -> np.ndarray:
        if row < state.n_index:
            return np.asarray(self._emb[modality][row], np.float32)
        return state.delta_emb[modality][row - state.n_index]

    def _filter_mask(self, state: _State, filters: dict[str, str] | None) -> np.ndarray | None:
        """Rows whose labels match every filter (case-insensitive; multi-label heads: one of the labels)."""
        if not filters:
            return None
        heads = {h["name"]: h for h in self.heads}
        mask = np.ones(len(state.products), dtype=bool)
        for name, value in filters.items():
            if name not in heads:
                raise ValueError(f"unknown filter head {name!r}; heads are: {', '.join(heads)}")
            classes = {c.lower(): c for c in heads[name]["classes"]}
            if str(value).strip().lower() not in classes:
                raise ValueError(f"no class {value!r} in head {name!r}; classes are: "
                                 f"{', '.join(heads[name]['classes'])}")
            value = classes[str(value).strip().lower()]
            if (name, value) not in state.masks:  # a filter costs one scan of the column per snapshot
                cells = state.values[name]
                state.masks[name, value] = (np.array([value in str(c).split("|") for c in cells], dtype=bool)
                                            if heads[name]["kind"] == "multi" else cells == value)
            mask &= state.masks[name, value]
        return mask

    def _ranked(self, state: _State, query: np.ndarray, target: str, k: int, mask=None, exclude=None) -> list[Hit]:
        need = k + (exclude is not None)
        n = state.n_index
        rows, scores = top_matches(query, self._emb[target], self._forests.get(target), need,
                                   None if mask is None else mask[:n])
        delta = state.delta_emb[target]
        if len(delta):  # added since the build: a small exact scan, merged by score
            live = np.arange(len(delta)) if mask is None else np.flatnonzero(mask[n:])
            d_rows, d_scores = exact_search(query, delta[live], need)
            rows, scores = np.concatenate([rows, live[d_rows] + n]), np.concatenate([scores, d_scores])
        order = [i for i in np.argsort(-scores, kind="stable") if rows[i] != exclude][:k]
        v = state.values
        return [Hit(id=v["id"][r], title=v["title"][r], image=v["image"][r], score=float(scores[i]), modality=target,
                    labels={h["name"]: str(v[h["name"]][r]) for h in self.heads}, added=bool(v["added"][r]))
                for i, r in ((i, int(rows[i])) for i in order)]

    def search(self, text: str | None = None, image=None, product: str | None = None, target: str = "image",
               k: int = 10, filters: dict[str, str] | None = None, image_weight: float = 0.5) -> list[Hit]:
        """The k products whose `target` embeddings ("image" photos or "text" titles) are nearest the query.

        Query: text, image, or both (normalise(w * image + (1 - w) * text), w = image_weight); or `product`, an
        id, whose own image and text embeddings are mixed the same way (1.0 = its photo only, 0.0 = its title
        only), the product itself left out. `filters` {head: class} keep only matching products; k hits are
        returned whenever k matching products exist.
        """
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose 'image' or 'text'")
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        state = self._state
        exclude = None
        if product is not None:
            check_weight(image_weight)
            exclude = self._row(state, product)
            query = mix(self._product_emb(state, exclude, "image"), self._product_emb(state, exclude, "text"),
                        image_weight)
        else:
            query = self.query_vector(text, image, image_weight)
        return self._ranked(state, query, target, int(k), self._filter_mask(state, filters), exclude)

    def neighbours(self, product_id: str, k: int = 8) -> dict[str, list[Hit]]:
        """"i2i", "i2t", "t2i", "t2t": the product's photo / title (first letter) against photos / titles."""
        state = self._state
        row = self._row(state, product_id)
        return {f"{q[0]}2{g[0]}": self._ranked(state, self._product_emb(state, row, q), g, k, exclude=row)
                for q in TARGETS for g in TARGETS}

    # -- labels ----------------------------------------------------------------------------------------------

    def classify(self, image=None, text: str | None = None, top: int = 3) -> dict:
        """The run's labels for a photo and/or title (`Run.classify`: same shape; needs no index)."""
        return self.run.classify(image=image, text=text, top=top)

    def zero_shot(self, labels: list[str], image=None, text: str | None = None) -> list[tuple[str, float]]:
        """`labels` ranked by cosine to the query (`Run.zero_shot`; needs no index)."""
        return self.run.zero_shot(labels, image=image, text=text)

    # -- added products --------------------------------------------------------------------------------------

    def add_products(self, items: list[dict]) -> list[dict]:
        """Embed, label and store new products ({"title", "image", optional "id"}) so search finds them now and
        after a restart; the next `index` build folds them in. Bad items are reported and skipped.

        Returns per item {"id", "title", "ok", "error", "labels": {head: predicted fused label}}.
        """
        with self._lock:  # one writer at a time; the file is re-read so another process's additions survive
            table, image_emb, text_emb = read_added(self.index_dir, self.run.dim)
            taken = set(self._index_products["id"]) | set(table["id"])
            results, good, pixels = [], [], []
            for item in items:
                item = item if isinstance(item, dict) else {"title": "", "image": None}  # reported: empty title
                result = {"id": str(item.get("id") or "").strip() or None, "ok": False, "error": None,
                          "title": str(item.get("title") or "").strip(), "labels": {}}
                results.append(result)
                try:
                    result["id"], result["title"], photo, small = check_item(item, taken, self.run.image_size)
                except ValueError as err:
                    result["error"] = str(err)
                    continue
                good.append((result, photo))
                pixels.append(small)
            if not good:
                return results
            new_image = self.run.encode_images(np.stack(pixels))
            new_text = self.run.encode_texts([r["title"] for r, _ in good])
            rows = []
            for (result, photo), labels in zip(good, predict_labels(self.run, new_image, new_text)):
                path = save_photo(self.index_dir, result["id"], photo)
                result.update(ok=True, labels=labels)
                rows.append({"id": result["id"], "title": result["title"], "image": str(path), "split": ADDED_SPLIT,
                             **labels, "fingerprint": self.run.fingerprint})
            table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
            image_emb, text_emb = np.concatenate([image_emb, new_image]), np.concatenate([text_emb, new_text])
            write_added(self.index_dir, table, image_emb, text_emb)  # one atomic file: rows + embeddings
            self._state = self._make_state((table, image_emb, text_emb))
        return results

    # -- map -------------------------------------------------------------------------------------------------

    def map_frame(self) -> pd.DataFrame:
        """The 2-D map: id, modality ("image"|"text"), x, y, title, image, one column per head, added.

        Products added since the build sit at the mean position of their 5 nearest mapped points.
        """
        if self._map is None:
            base = load_map(self._build_dir)
            if base is None or len(base) != 2 * len(self._index_products):
                raise IndexMissingError(f"the index of {self.run.run_dir} has no map, or an outdated one: run "
                                        f"`python -m huse_core index --run {self.run.run_dir}` (without --no-map)")
            self._map = base
        state = self._state
        if state.map_frame is None:  # added products are placed once per snapshot
            state.map_frame = extend_map(self._map, self._emb["image"], self._emb["text"],
                                         state.products.iloc[state.n_index :], state.delta_emb["image"],
                                         state.delta_emb["text"], self.heads)
        return state.map_frame
