import numpy as np
import pytest

from deeptalk.evaluation.statistics import cluster_weights, item_clusters, standard_error


def test_cluster_weights_draw_whole_clusters_reproducibly():
    clusters = ["a", "a", "b", "c", "c", "c"]
    w = cluster_weights(clusters, replicates=500, seed=3)
    assert w.shape == (500, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all() and (w[:, 4] == w[:, 5]).all()
    per_cluster = w[:, [0, 2, 3]]
    assert (per_cluster.sum(1) == 3).all()  # three clusters drawn per replicate
    assert np.array_equal(w, cluster_weights(clusters, replicates=500, seed=3))  # fixed seed: bit-identical
    assert not np.array_equal(w, cluster_weights(clusters, replicates=500, seed=4))
    with pytest.raises(ValueError, match="at least one item"):
        cluster_weights([])
    with pytest.raises(ValueError, match="2 replicates"):
        cluster_weights(["a"], replicates=1)


def test_bootstrap_se_of_a_mean_matches_the_textbook_formula():
    x = np.random.default_rng(0).normal(size=400)
    w = cluster_weights(range(len(x)), replicates=4000, seed=0)
    se = standard_error(w @ x / w.sum(1))
    assert se == pytest.approx(x.std(ddof=0) / np.sqrt(len(x)), rel=0.05)


def test_item_clusters_and_standard_error_edge_cases():
    assert item_clusters(["f1", "", "f1", ""], "q") == ["f1", "q1", "f1", "q3"]
    assert standard_error(np.array([1.0, np.nan, 3.0, np.inf])) == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert standard_error(np.array([1.0, np.nan])) is None
