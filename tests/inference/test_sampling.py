import pytest
import torch

from deeptalk.inference.sampling import allowed_mask, apply_repetition_penalty, sample_top_k


def test_repetition_penalty_pushes_repeated_tokens_down_both_signs():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    out = apply_repetition_penalty(logits, torch.tensor([0, 1, 1]), 2.0)
    assert out.tolist() == [1.0, -2.0, 0.5, 3.0]
    assert logits.tolist() == [2.0, -1.0, 0.5, 3.0]  # input untouched
    assert apply_repetition_penalty(logits, torch.tensor([], dtype=torch.long), 1.2) is logits


def test_penalty_can_flip_a_greedy_choice():
    logits = torch.tensor([1.1, 1.0])
    assert sample_top_k(logits, 1) == 0
    assert sample_top_k(apply_repetition_penalty(logits, torch.tensor([0]), 1.2), 1) == 1


def test_top_k_never_leaves_the_k_best_and_respects_masks():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([5.0, 4.0, 3.0, -1.0, -2.0]) + allowed_mask(5, [range(1, 5)])
    draws = {int(sample_top_k(logits, 2, 1.0, g)) for _ in range(200)}
    assert draws == {1, 2}
    assert sample_top_k(logits, 1) == 1
    with pytest.raises(ValueError):
        sample_top_k(logits, 0)


def test_top_k_is_reproducible_with_a_seeded_generator():
    logits = torch.randn(3, 50)
    a = sample_top_k(logits, 10, 0.8, torch.Generator().manual_seed(3))
    b = sample_top_k(logits, 10, 0.8, torch.Generator().manual_seed(3))
    assert a.shape == (3,) and torch.equal(a, b)
