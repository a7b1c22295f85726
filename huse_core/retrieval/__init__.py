"""Retrieval: exact k-NN, Annoy forests and faiss indexes, the index layout on disk, catalogue embedding, added
products (their store and adding them), the keyword side (BM25, stored with the build), the map, the index build and
the Searcher. Arrows run one way: knn, layout <- annoy_index, faiss_index, map <- index, embed <- store <- adding
(also <- index) <- build, search; keyword, layout <- keyword_store <- build, search."""
