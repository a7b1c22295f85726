"""Label issues out of sample: K-fold heads doubt a label the row's own features memorised, and the pool's exponents
come from the other folds (and the held-out rows), so memorising earns no weight. (End to end: tests/test_audit.py.)"""

import numpy as np

from huse_core.audit.crossfit import fold_of, out_of_fold, pool


def test_a_memorised_wrong_label_is_still_flagged():
    """Features that carry a row's own (wrong) label would let an in-sample head fit it; out-of-fold heads don't
    see that row's label, so its catalogue label still scores low."""
    rng = np.random.default_rng(0)
    n, classes = 400, 4
    y_true = rng.integers(0, classes, n)
    x = np.eye(classes)[y_true] * 3 + rng.normal(size=(n, classes))
    x = np.hstack([x, rng.normal(size=(n, 40))])  # a unique fingerprint per row: enough to memorise a label
    y = y_true.copy()
    y[7] = (y_true[7] + 1) % classes
    from sklearn.linear_model import LogisticRegression

    in_sample = LogisticRegression(C=1e4, max_iter=5000).fit(x, y).predict_proba(x)
    assert in_sample[7].argmax() == y[7]  # the wrong label is memorised in sample
    oof = out_of_fold(x.astype(np.float32), [y], [classes])[0]
    assert oof[7].argmax() == y_true[7] and oof[7, y[7]] < 0.5


def test_pool_weights_come_from_the_other_folds_and_favour_the_informative_head():
    """The pool's exponents for a fold's rows are fitted on the other folds only: changing one fold's labels leaves
    that fold's pooled probabilities unchanged; a head that knows the labels outweighs one that guesses."""
    rng = np.random.default_rng(0)
    n, classes = 600, 5
    y = rng.integers(0, classes, n)
    good = np.full((n, classes), 0.05)
    good[np.arange(n), y] = 0.8
    noise = rng.dirichlet(np.ones(classes), n)
    fold = fold_of(n)
    pooled = pool([good, noise], y, fold)
    assert (pooled.argmax(1) == y).mean() > 0.95
    changed = y.copy()
    changed[fold == 0] = rng.integers(0, classes, (fold == 0).sum())
    again = pool([good, noise], changed, fold)
    np.testing.assert_allclose(again[fold == 0], pooled[fold == 0], rtol=1e-5)
    assert not np.allclose(again[fold != 0], pooled[fold != 0])


def test_a_memorised_wrong_label_is_still_flagged_by_the_pooled_heads():
    """Embeddings that memorised a wrong label (moved towards its class) and titles that name the true class:
    the pooled out-of-fold probabilities still doubt the catalogue label."""
    from scipy.sparse import csr_matrix

    rng = np.random.default_rng(1)
    n, classes = 500, 4
    y_true = rng.integers(0, classes, n)
    y = y_true.copy()
    wrong = np.arange(0, 40, 4)
    y[wrong] = (y_true[wrong] + 1) % classes
    emb = np.eye(classes)[y] * 2 + rng.normal(size=(n, classes))  # the towers pulled each row to its label
    words = csr_matrix(np.hstack([np.eye(classes)[y_true] * 2, rng.random((n, 20)) < 0.1]).astype(np.float32))
    fold = fold_of(n)
    sources = [out_of_fold(emb.astype(np.float32), [y], [classes])[0], out_of_fold(words, [y], [classes])[0],
               out_of_fold(words, [y], [classes], head="bayes")[0]]
    pooled = pool(sources, y, fold)
    doubt = 1 - pooled[np.arange(n), y]
    assert set(wrong) <= set(np.argsort(-doubt)[: 2 * len(wrong)])


def test_pool_weights_fitted_on_held_out_rows_do_not_reward_memorising():
    """A head that memorised the training rows' labels (wrong ones too) and guesses elsewhere earns weight when the
    pool is fitted on every row; fitted on the held-out rows only, the head that reads the true class wins, and the
    wrong training labels are doubted."""
    rng = np.random.default_rng(2)
    n, classes = 2000, 5
    y_true = rng.integers(0, classes, n)
    y = y_true.copy()
    wrong = rng.choice(n, 100, replace=False)
    y[wrong] = (y_true[wrong] + 1) % classes
    held_out = rng.random(n) < 0.2
    memorised = rng.dirichlet(np.ones(classes), n)
    memorised[~held_out] = 0.02
    memorised[np.flatnonzero(~held_out), y[~held_out]] = 0.92
    reads = np.full((n, classes), 0.1)
    reads[np.arange(n), y_true] = 0.6
    fold = fold_of(n)
    train_wrong = wrong[~held_out[wrong]]
    everywhere = pool([memorised, reads], y, fold)[train_wrong, y[train_wrong]]
    held = pool([memorised, reads], y, fold, fit_rows=held_out)[train_wrong, y[train_wrong]]
    assert held.mean() < 0.5 < everywhere.mean()
