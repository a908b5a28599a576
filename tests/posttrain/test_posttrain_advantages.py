"""GRPO arithmetic pinned against hand-computed values."""

import math

import pytest
import torch

from moelab.posttrain.advantages import group_advantages, grpo_loss, kl_k3, zero_variance_share


def test_group_advantages_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    adv = group_advantages(rewards, 4)
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 1/sqrt(3)
    s1 = 1 / math.sqrt(3)
    # group 3: mean 0.75, unbiased std sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5
    expected = [0.5 / (s1 + 1e-6), -0.5 / (s1 + 1e-6), -0.5 / (s1 + 1e-6), 0.5 / (s1 + 1e-6),
                0.0, 0.0, 0.0, 0.0,
                0.25 / 0.500001, 0.25 / 0.500001, 0.25 / 0.500001, -0.75 / 0.500001]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    assert zero_variance_share(rewards, 4) == pytest.approx(1 / 3)


def test_group_advantages_reject_bad_groups():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 2)


def test_kl_k3_hand_values():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.0, -1.5])
    # ref - logp = 0, 1, -1  ->  e^x - x - 1 = 0, e - 2, e^-1
    assert kl_k3(logp, ref).tolist() == pytest.approx([0.0, math.e - 2, math.exp(-1)], rel=1e-6)


def _example():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.5], [-0.5, -1.0]])  # ratios 1, e^0.5 | 1, e^-0.5
    ref = torch.tensor([[-1.0, -1.0], [-0.5, -0.5]])  # ref - logp = 0, 1 | 0, 1
    adv = torch.tensor([1.0, -2.0])
    return logp, old, ref, adv


def test_grpo_loss_hand_values():
    logp, old, ref, adv = _example()
    mask = torch.ones(2, 2)
    # pg per token: row 0 (A=1): -1, max(-e^0.5, -1.2) = -1.2 (clipped)
    #               row 1 (A=-2): 2, max(2 e^-0.5 = 1.213, 2 * 0.8 = 1.6) = 1.6 (clipped)
    pg = (-1 - 1.2 + 2 + 1.6) / 4
    kl = 2 * (math.e - 2) / 4
    terms = grpo_loss(logp_BT=logp, old_logp_BT=old, ref_logp_BT=ref, advantages_B=adv, mask_BT=mask,
                      clip_eps=0.2, kl_coef=0.1)
    assert terms.pg_loss.item() == pytest.approx(pg)
    assert terms.kl.item() == pytest.approx(kl)
    assert terms.loss.item() == pytest.approx(pg + 0.1 * kl)
    assert terms.clip_frac.item() == pytest.approx(0.5)
    assert terms.num_tokens.item() == 4


def test_grpo_loss_gradient_is_zero_on_clipped_tokens():
    logp, old, ref, adv = _example()
    terms = grpo_loss(logp_BT=logp, old_logp_BT=old, advantages_B=adv, mask_BT=torch.ones(2, 2), clip_eps=0.2)
    terms.loss.backward()
    # d/dlogp of -A·ρ/4 is -A·ρ/4 where unclipped; 0 where the clipped branch is taken
    assert logp.grad.flatten().tolist() == pytest.approx([-0.25, 0.0, 0.5, 0.0])


def test_grpo_loss_masking_entropy_and_normalizer():
    logp, old, ref, adv = _example()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    entropy = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    terms = grpo_loss(logp_BT=logp, old_logp_BT=old, ref_logp_BT=ref, advantages_B=adv, mask_BT=mask,
                      clip_eps=0.2, kl_coef=0.1, entropy_BT=entropy, entropy_coef=0.01)
    pg = (-1 - 1.2 + 2) / 3
    kl = (math.e - 2) / 3
    ent = (1 + 2 + 3) / 3
    assert terms.pg_loss.item() == pytest.approx(pg)
    assert terms.kl.item() == pytest.approx(kl)
    assert terms.entropy.item() == pytest.approx(ent)
    assert terms.clip_frac.item() == pytest.approx(1 / 3)
    assert terms.loss.item() == pytest.approx(pg + 0.1 * kl - 0.01 * ent)
    # a caller accumulating micro-batches divides by the whole batch's token count instead
    halved = grpo_loss(logp_BT=logp, old_logp_BT=old, ref_logp_BT=ref, advantages_B=adv, mask_BT=mask,
                       clip_eps=0.2, kl_coef=0.1, entropy_BT=entropy, entropy_coef=0.01, normalizer=6.0)
    assert halved.loss.item() == pytest.approx(terms.loss.item() / 2)


def test_first_update_has_ratio_one_and_plain_policy_gradient():
    # With logp == old (the first of the mu updates) the loss value is -mean(A) over tokens and nothing clips.
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    terms = grpo_loss(logp_BT=logp, old_logp_BT=logp.detach(), advantages_B=torch.tensor([0.7]),
                      mask_BT=torch.ones(1, 3), clip_eps=0.2)
    assert terms.loss.item() == pytest.approx(-0.7)
    assert terms.clip_frac.item() == 0.0
