import numpy as np

from deeptalk.codec.quantizer import ResidualQuantizer, kmeans, nearest


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 3)) * 10
    x = np.concatenate([c + rng.normal(scale=0.1, size=(50, 3)) for c in centres])
    fitted = kmeans(x, 4, iters=10, rng=np.random.default_rng(1))
    # every true centre has a fitted code within the noise level
    assert np.sqrt(((centres[:, None] - fitted[None]) ** 2).sum(-1)).min(1).max() < 0.5


def test_kmeans_with_fewer_points_than_codes_keeps_the_size():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    cb = kmeans(x, 10, iters=3, rng=np.random.default_rng(0))
    assert cb.shape == (10, 3)
    np.testing.assert_array_equal(nearest(x, cb), np.arange(4))


def _quantizer(dim=5, size=16):
    rng = np.random.default_rng(0)
    return ResidualQuantizer((4, 2, 1), [rng.normal(size=(size, dim)).astype(np.float32) for _ in range(3)])


def test_windowed_reconstruction_equals_whole():
    q = _quantizer()
    feats = np.random.default_rng(1).normal(size=(40, 5)).astype(np.float32)
    levels = q.encode(feats)
    assert [len(lv) for lv in levels] == [10, 20, 40]
    whole = q.reconstruct(levels, 0, 40)
    pieces = np.concatenate([q.reconstruct(levels, a, a + 4) for a in range(0, 40, 4)])
    np.testing.assert_array_equal(pieces, whole)


def test_encoder_residual_matches_decoder():
    """Each level quantises what the decoder's reconstruction of the previous levels leaves over."""
    q = _quantizer()
    feats = np.random.default_rng(2).normal(size=(16, 5)).astype(np.float32)
    levels = q.encode(feats)
    err_all = np.abs(q.reconstruct(levels, 0, 16) - feats).mean()
    coarse_only = ResidualQuantizer((4,), q.codebooks[:1]).reconstruct(levels[:1], 0, 16)
    assert err_all < np.abs(coarse_only - feats).mean()


def test_frames_final_needs_next_coarse_frame():
    q = _quantizer()
    assert q.frames_final(3, ended=False) == 8
    assert q.frames_final(3, ended=True) == 12
    assert q.frames_final(0, ended=False) == 0
