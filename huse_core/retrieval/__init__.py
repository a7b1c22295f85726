"""Retrieval: exact k-NN, Annoy forests, the index layout on disk, catalogue embedding, added products, the map,
the index build and the Searcher. Arrows run one way: knn, layout <- annoy_index, map <- index, embed <- store <-
build, search."""
