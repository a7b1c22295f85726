"""The Searcher: cross-modal search, classification, zero-shot labels, neighbours, added products and the map.

Over 300 lines: one class whose methods all read the same snapshot (_State) of the index and added products.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.heads import Head
from ..run import Run, check_weight, load_run, mix
from .adding import add_products, resembling
from .embed import products_frame
from .hybrid import DEFAULT_MODE, KEYWORD_WEIGHTS, Router, check_mode, credit_untitled, hybrid_order, keyword_top
from .index import load_index, top_matches
from .keyword import KeywordIndex, label_terms, terms, useless_title
from .keyword_store import KeywordParts, keyword_texts, load_parts, make_parts
from .knn import exact_search
from .layout import IndexMissingError, StaleIndexError, build_folder, index_dir, load_map, load_product_emb
from .map import extend_map, full_map
from .rerank import CANDIDATES, agreement, class_log_probs, label_codes, search_scale
from .store import IndexIds, read_added

__all__ = ["Hit", "IndexMissingError", "Searcher", "StaleIndexError"]
TARGETS = ("image", "text")  # what a product's photo or title can be compared with
KINDS = TARGETS + ("product",)  # search targets: also whole products (the fusion layer's vectors)
REFRESH_EVERY_S = 1.0  # searches look for products other processes added at most this often
log = logging.getLogger(__name__)


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
    # A title query's hits are ranked by s * score + agreement, agreement = sum over heads of log p(this product's
    # class | the title) (retrieval.rerank); None where the ranking is by cosine alone
    agreement: float | None = None
    # BM25 of the words in the product's title and labels (keyword / hybrid modes); a product with a useless title:
    # raised to its share of the query's label words (retrieval.hybrid.credit_untitled)
    keyword: float | None = None


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
    codes: dict | None = field(default=None, init=False)  # head -> each row's class index (retrieval.rerank)
    keyword: KeywordIndex | None = field(default=None, init=False)  # BM25 over every row, made on first use
    # rows whose title says nothing (useless_title), and the terms of their keyword documents (label words)
    untitled: tuple[np.ndarray, list[set[str]]] | None = field(default=None, init=False)

    def __post_init__(self):
        self.row_of = {pid: i for i, pid in enumerate(self.products["id"])}
        self.values = {c: self.products[c].to_numpy(dtype=object) for c in self.products.columns}


class Searcher:
    """Search a run's index. Open with `Searcher.open(run_dir)`; safe to share between threads."""

    def __init__(self, run: Run, manifest: dict, image_emb, text_emb, products: pd.DataFrame, forests: dict,
                 backend: str):
        self.run, self.manifest, self.backend, self._forests = run, manifest, backend, forests
        self.heads: list[Head] = run.heads
        self.index_dir = index_dir(run.run_dir)
        self._build_dir = build_folder(self.index_dir, manifest)  # this build's files, even after a newer one
        self._emb = {"image": image_emb, "text": text_emb}  # "product" joins on first use (_product_vectors)
        self._index_products = products
        self._index_ids = IndexIds.of(products["id"])
        self._lock = threading.Lock()  # serialises state updates; searches read self._state without locking
        self._map: pd.DataFrame | None = None
        self._added = read_added(self.index_dir, run.dim)  # (table, image_emb, text_emb) of every added product
        self._state = self._make_state(self._added)
        self._looked = time.monotonic()  # when the store was last read
        self.scale = search_scale(run)  # s of retrieval.rerank: a title query ranks by s * cosine + agreement
        self._index_codes: dict | None = None  # the index rows' class codes, made on the first title search
        self._keyword_parts: KeywordParts | None = None  # the index rows' BM25 etc., read on the first word search
        self._keyword_lock = threading.Lock()
        self._index_untitled: tuple | None = None  # index rows with a useless title, their terms (first word search)
        self.keyword_source: str | None = None  # "stored" (by the build) or "memory" once the keyword side is read
        self._label_terms = label_terms(self.heads)
        self._facet_terms: set[str] | None = None  # label and brand words: an attribute query's (hybrid.Router)
        self.fusion = "sum"  # the hybrid rule (retrieval.hybrid)
        self.keyword_weights = dict(KEYWORD_WEIGHTS)  # the keyword side's weight per query kind (hybrid.Router)

    @classmethod
    def open(cls, run_dir: str | Path, backend: str = "auto") -> Searcher:
        """Load a run and its index (embeddings and Annoy forests memory-mapped, faiss codes read) and the added
        products.

        backend: "annoy", "faiss", "exact", or "auto" = exact below EXACT_BELOW products, else the index the build
        made (index.json's "backend"; Annoy for indexes from before faiss).
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
        delta = {"image": image_emb[live], "text": text_emb[live]}
        if self.run.model.fusion is not None:
            delta["product"] = self.run.encode_products(delta["image"], delta["text"]) if live.any() else \
                np.zeros((0, self.run.dim), np.float32)
        return _State(products, len(self._index_products), delta, len(table))

    def _product_vectors(self) -> None:
        """The catalogue's whole-product vectors: the build's (memory-mapped, searched through its product index
        when it has one), or for a build from before they were stored, computed once from its photo and title
        embeddings (the fusion layer is one small MLP: ~2 s for 44k products on 2 CPU cores) and searched exactly."""
        if "product" in self._emb:
            return
        if self.run.model.fusion is None:
            raise ValueError(f"{self.run.run_dir} was trained without the fusion layer, so it has no whole-product "
                             f"vectors: retrain it with `python -m huse_core train` to search whole products")
        with self._lock:
            if "product" not in self._emb:  # stored by the build (builds before them: computed here)
                stored = load_product_emb(self._build_dir)
                self._emb["product"] = (stored if stored is not None and len(stored) == len(self._emb["image"])
                                        else self.run.encode_products(self._emb["image"], self._emb["text"]))

    def refresh(self) -> bool:
        """Take in the products added since this Searcher last read the store, by this process or another (the
        `add` command, a second app); True when there were any. Reads only the new rows. Searches call it at most
        once every REFRESH_EVERY_S."""
        with self._lock:
            return self._pull()

    def _pull(self) -> bool:
        table, image_emb, text_emb = self._added
        new, new_image, new_text = read_added(self.index_dir, self.run.dim,
                                              since=int(table["seq"].max()) if len(table) else 0)
        self._looked = time.monotonic()
        if not len(new):
            return False
        self._added = (pd.concat([table, new], ignore_index=True) if len(table) else new,
                       np.concatenate([image_emb, new_image]), np.concatenate([text_emb, new_text]))
        self._state = self._make_state(self._added)
        return True

    def _current(self) -> _State:
        """The state to answer from, after a look at the store when the last one is over REFRESH_EVERY_S old (and
        no other thread is updating it: then that one's result will do)."""
        if time.monotonic() - self._looked >= REFRESH_EVERY_S and self._lock.acquire(blocking=False):
            try:
                self._pull()
            finally:
                self._lock.release()
        return self._state

    @property
    def products(self) -> pd.DataFrame:
        """id, title, image, split, one column per head, added: the catalogue, then added products."""
        return self._current().products

    @property
    def fingerprint(self) -> str:
        """Changes whenever results can: model, index build, or the number of added products."""
        return f"{self.run.fingerprint}-{self.manifest['build_id']}-{self._current().n_added}"

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

    def _ranked(self, state: _State, query: np.ndarray, target: str, k: int, mask=None, exclude=None,
                log_probs: dict | None = None, kw: np.ndarray | None = None, weight: float = 0.0) -> list[Hit]:
        """The k best of the index's nearest; with a title's class `log_probs` ({head: (1, C)}), its CANDIDATES
        nearest re-ordered by s * cosine + agreement (retrieval.rerank); with `kw` (every row's BM25 of the
        query's words), joined with the keyword side's best and ranked by the hybrid rule (retrieval.hybrid) with
        keyword weight `weight`."""
        need = k + (exclude is not None)
        if log_probs is not None or kw is not None:
            need = max(need, CANDIDATES)
        n = state.n_index
        rows, scores = top_matches(query, self._emb[target], self._forests.get(target), need,
                                   None if mask is None else mask[:n], tuned_for=k + (exclude is not None))
        delta = state.delta_emb[target]
        if len(delta):  # added since the build: a small exact scan, merged by score
            live = np.arange(len(delta)) if mask is None else np.flatnonzero(mask[n:])
            d_rows, d_scores = exact_search(query, delta[live], need)
            rows, scores = np.concatenate([rows, live[d_rows] + n]), np.concatenate([scores, d_scores])
        agree_of = None
        if log_probs is not None:
            if state.codes is None:
                state.codes = self._label_codes(state)
            agree_of = lambda r: agreement(r[None], log_probs, state.codes)[0]  # noqa: E731
        if kw is not None:
            allowed = None if mask is None else mask.copy()
            if exclude is not None:
                allowed = np.ones(len(kw), bool) if allowed is None else allowed
                allowed[exclude] = False
            rows, scores, _ = hybrid_order(rows, scores, kw, lambda r: self._cosines(state, query, target, r),
                                           agree_of, self.scale, weight=weight, rule=self.fusion,
                                           allowed=allowed)
            order = np.arange(len(rows))
        else:
            key = scores if agree_of is None else self.scale * scores + agree_of(rows)
            order = np.argsort(-key, kind="stable")
        order = [i for i in order if rows[i] != exclude][:k]
        return self._hits(state, rows[order], scores[order], target, agree_of, kw)

    def _cosines(self, state: _State, query: np.ndarray, target: str, rows: np.ndarray) -> np.ndarray:
        """Cosines of the query with these rows' `target` embeddings (index rows and added rows)."""
        n, rows = state.n_index, np.asarray(rows, np.int64)
        out = np.empty(len(rows), np.float32)
        old = rows < n
        if old.any():
            idx = rows[old]
            order = np.argsort(idx)  # read a memory-mapped file front to back
            part = np.empty(len(idx), np.float32)
            part[order] = np.asarray(self._emb[target][idx[order]], np.float32) @ query
            out[old] = part
        if (~old).any():
            out[~old] = state.delta_emb[target][rows[~old] - n] @ query
        return out

    def _hits(self, state: _State, rows, scores, target: str, agree_of=None, kw=None) -> list[Hit]:
        v, rows = state.values, [int(r) for r in rows]
        agree = agree_of(np.asarray(rows, np.int64)) if agree_of is not None and rows else None
        return [Hit(id=v["id"][r], title=v["title"][r], image=v["image"][r], score=float(scores[i]), modality=target,
                    labels={h["name"]: str(v[h["name"]][r]) for h in self.heads}, added=bool(v["added"][r]),
                    agreement=None if agree is None else float(agree[i]),
                    keyword=None if kw is None else float(kw[r]))
                for i, r in enumerate(rows)]

    def _keyword_side(self) -> KeywordParts:
        """The index rows' keyword side (BM25, brand words, untitled rows): the one `index` stored with the build,
        or for a build without one that matches its rows (an older version's), built here once per Searcher (~1 s
        per 44k products on 2 cores), with a one-line warning saying how to make it fast."""
        if self._keyword_parts is None:
            with self._keyword_lock:
                if self._keyword_parts is None:
                    parts, why = load_parts(self._build_dir, self._index_products, self.heads)
                    if parts is None:
                        log.warning(f"the keyword index of {self.run.run_dir} {why}: building it in memory for this "
                                    f"process; `python -m huse_core index --run {self.run.run_dir}` stores it and "
                                    f"makes the first word search fast")
                        parts = make_parts(self._index_products, self.heads)
                    self.keyword_source = "memory" if why else "stored"
                    self._keyword_parts = parts
        return self._keyword_parts

    def _keyword(self, state: _State) -> KeywordIndex:
        """The snapshot's keyword index: BM25 over the index rows (_keyword_side) with the snapshot's added rows."""
        if state.keyword is None:
            added = range(state.n_index, len(state.products))
            state.keyword = self._keyword_side().index.with_added(keyword_texts(state.products, self.heads, added))
        return state.keyword

    def keyword_scores(self, text: str) -> np.ndarray:
        """Every product's keyword score for these words (catalogue rows, then added ones: the order of
        `products`): its BM25, or for a product whose title says nothing, the credit of its label words."""
        return self._keyword_scores(self._current(), text)

    def router(self) -> Router:
        """What decides a typed query's kind and keyword weight: the shop's label words and brands (title words
        that start several titles, found by the index build: _keyword_side)."""
        if self._facet_terms is None:
            self._facet_terms = self._label_terms | self._keyword_side().brands
        return Router(self._facet_terms, self.keyword_weights)

    def query_kind(self, text: str) -> str:
        """"attribute" (every word names a label or a brand) or "title": how hybrid search weighs its words."""
        return self.router().kind(self._keyword(self._current()).query_terms(str(text)))

    def _keyword_scores(self, state: _State, text: str) -> np.ndarray:
        """BM25 of every row; rows with a useless title ("IMG_0231") credited by hybrid.credit_untitled with the
        share of the query's label words their labels hold: the words their title cannot say count as unknown,
        not as missing."""
        index = self._keyword(state)
        kw = index.scores(text)
        if state.untitled is None:
            if self._index_untitled is None:
                rows = self._keyword_side().untitled
                self._index_untitled = rows, self._doc_terms(self._index_products, rows)
            added = state.n_index + np.flatnonzero([useless_title(t) for t in state.values["title"][state.n_index:]])
            state.untitled = (np.concatenate([self._index_untitled[0], added]).astype(int),
                              self._index_untitled[1] + self._doc_terms(state.products, added))
        rows, docs = state.untitled
        if not len(rows):
            return kw
        return credit_untitled(kw, rows, index.label_share(text, self._label_terms, docs))

    def _doc_terms(self, products: pd.DataFrame, rows) -> list[set[str]]:
        """The terms of these rows' keyword documents (title and label words)."""
        return [set(terms(t)) for t in keyword_texts(products, self.heads, rows)]

    def _label_codes(self, state: _State) -> dict[str, np.ndarray]:
        """Each row's class per head (retrieval.rerank): the index's rows once per Searcher, added rows per state."""
        n = state.n_index
        if self._index_codes is None:
            self._index_codes = label_codes({c: v[:n] for c, v in state.values.items()}, self.heads)
        added = label_codes({c: v[n:] for c, v in state.values.items()}, self.heads)
        return {h: np.concatenate([c, added[h]]) for h, c in self._index_codes.items()}

    def search(self, text: str | None = None, image=None, product: str | None = None, target: str = "image",
               k: int = 10, filters: dict[str, str] | None = None, image_weight: float = 0.5,
               use_labels: bool = True, mode: str = DEFAULT_MODE) -> list[Hit]:
        """The k products whose `target` embeddings ("image" photos or "text" titles) are nearest the query.

        Query: text, image, or both (normalise(w * image + (1 - w) * text), w = image_weight); or `product`, an
        id, whose own image and text embeddings are mixed the same way (1.0 = its photo only, 0.0 = its title
        only), the product itself left out. `filters` {head: class} keep only matching products; k hits are
        returned whenever k matching products exist. A title alone (no image, no product) is ranked with what the
        title's class predictions say of each product's labels (retrieval.rerank) unless `use_labels` is False.

        `mode` for words alone: "hybrid" (default) joins the keyword side (BM25 over titles and label words,
        typo-tolerant) to that ranking (retrieval.hybrid), weighted by what the words look like (`query_kind`);
        "vector" ranks by the shared space (and labels) only; "keyword" by BM25 only (products sharing no word with
        the query are not returned). A photo or product query is a vector query ("keyword" refuses it).
        """
        check_mode(mode)
        if target not in KINDS:
            raise ValueError(f"unknown target {target!r}; choose 'image', 'text' or 'product'")
        words_only = bool(text) and image is None and product is None
        if mode == "keyword" and not words_only:
            raise ValueError("keyword search reads words only: pass text without an image or product, or use "
                             "mode 'hybrid' or 'vector'")
        if target == "product":
            self._product_vectors()
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        state = self._current()
        mask = self._filter_mask(state, filters)
        kw = self._keyword_scores(state, str(text)) if words_only and mode != "vector" else None
        exclude = None
        if product is not None:
            check_weight(image_weight)
            exclude = self._row(state, product)
            if target == "product":  # a whole product against whole products: its own fused vector
                query = self._product_emb(state, exclude, "product")
            else:
                query = mix(self._product_emb(state, exclude, "image"), self._product_emb(state, exclude, "text"),
                            image_weight)
        elif target == "product" and text and image is not None:  # "this photo, in blue": one product query
            query = self.run.encode_products(self.encode_image(image), self.run.encode_texts(text))[0]
        else:
            query = self.query_vector(text, image, image_weight)
        if mode == "keyword":
            rows = keyword_top(kw, int(k), mask)
            return self._hits(state, rows, self._cosines(state, query, target, rows), target, kw=kw)
        log_probs = None
        if use_labels and words_only:  # a title alone: what it says of classes counts too
            log_probs = class_log_probs(self.run.probabilities(text_emb=query[None], titles=[str(text)]))
        weight = 0.0 if kw is None else self.router().weight(self._keyword(state).query_terms(str(text)))
        return self._ranked(state, query, target, int(k), mask, exclude, log_probs, kw, weight)

    def neighbours(self, product_id: str, k: int = 8) -> dict[str, list[Hit]]:
        """"i2i", "i2t", "t2i", "t2t": the product's photo / title (first letter) against photos / titles; and
        "p2p", the whole product against whole products, when the run has a fusion layer."""
        state = self._current()
        row = self._row(state, product_id)
        found = {f"{q[0]}2{g[0]}": self._ranked(state, self._product_emb(state, row, q), g, k, exclude=row)
                 for q in TARGETS for g in TARGETS}
        if self.run.model.fusion is not None:
            self._product_vectors()
            found["p2p"] = self._ranked(state, self._product_emb(state, row, "product"), "product", k, exclude=row)
        return found

    # -- labels ----------------------------------------------------------------------------------------------

    def classify(self, image=None, text: str | None = None, top: int = 3) -> dict:
        """The run's labels for a photo and/or title (`Run.classify`: same shape; needs no index)."""
        return self.run.classify(image=image, text=text, top=top)

    def zero_shot(self, labels: list[str], image=None, text: str | None = None) -> list[tuple[str, float]]:
        """`labels` ranked by cosine to the query (`Run.zero_shot`; needs no index)."""
        return self.run.zero_shot(labels, image=image, text=text)

    # -- added products --------------------------------------------------------------------------------------

    def add_products(self, items: list[dict], source: str | None = None) -> list[dict]:
        """Embed, label and store new products ({"title", "image", optional "id"}) so search finds them now and
        after a restart; the next `index` build folds them in. Bad items are reported and skipped. Safe from many
        threads and processes at once: the store (SQLite) takes each call's products in one transaction.

        `source` names the table the items come from (each with its "row"): a row it already added is not
        stored twice (adding.add_products).

        Returns per item {"id", "title", "ok", "error", "labels": {head: predicted fused label}, "resembles": {"id",
        "score"} of a catalogue product it looks like, or None}.
        """
        ids = self._index_products["id"].to_numpy(dtype=object)
        results = add_products(self.run, self.index_dir, items, self._index_ids, source,
                               lambda u, v: resembling(u, v, self._emb["image"], self._emb["text"], ids))
        self.refresh()  # this call's products, and any another process added meanwhile
        return results

    # -- map -------------------------------------------------------------------------------------------------

    def map_frame(self) -> pd.DataFrame:
        """The 2-D map: id, modality ("image"|"text"|"product"), x, y, title, image, one column per head, added.

        "product" rows (whole-product vectors) are there when the run has a fusion layer and the build placed them.
        Products added since the build sit at the mean position of their 5 nearest mapped points.
        """
        n = len(self._index_products)
        if self._map is None:
            base = load_map(self._build_dir)
            hint = f"run `python -m huse_core index --run {self.run.run_dir}` (without --no-map)"
            if base is None or len(base) not in (2 * n, 3 * n):
                raise IndexMissingError(f"the index of {self.run.run_dir} has no map, or an outdated one: {hint}")
            try:
                self._map = full_map(base, self._index_products, self.heads)
            except ValueError as err:
                raise IndexMissingError(f"the index of {self.run.run_dir} has a damaged map ({err}): {hint}") from err
        kinds = ["image", "text"] + (["product"] if len(self._map) == 3 * n and n else [])
        if "product" in kinds:
            self._product_vectors()
        state = self._current()
        if state.map_frame is None:  # added products are placed once per snapshot
            state.map_frame = extend_map(self._map, [self._emb[k] for k in kinds], state.products.iloc[state.n_index :],
                                         [state.delta_emb[k] for k in kinds], self.heads)
        return state.map_frame
