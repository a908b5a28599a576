"""Aux losses against values worked out by hand."""

import math

import pytest
import torch

from moelab.model import load_balancing_loss, router_z_loss


def test_load_balancing_loss_hand_computed():
    # N=2 tokens, E=3 experts, K=2 → 4 slots: expert 0 got 2, expert 1 got 1, expert 2 got 1.
    probs_NE = torch.tensor([[0.5, 0.3, 0.2], [0.3, 0.1, 0.6]])
    counts_E = torch.tensor([2, 1, 1])
    # f = [2/4, 1/4, 1/4]; P = [0.4, 0.2, 0.4]; E·Σ f·P = 3·(0.2 + 0.05 + 0.1) = 1.05
    loss = load_balancing_loss(probs_NE=probs_NE, expert_counts_E=counts_E, top_k=2)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.05, abs=1e-6)


def test_load_balancing_loss_uniform_is_one_and_grad_flows_through_probs():
    logits_NE = torch.zeros(8, 4, requires_grad=True)
    probs_NE = torch.softmax(logits_NE, -1)
    counts_E = torch.tensor([4, 4, 4, 4])  # 8 tokens × top-2, perfectly balanced
    loss = load_balancing_loss(probs_NE=probs_NE, expert_counts_E=counts_E, top_k=2)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert logits_NE.grad is not None


def test_load_balancing_loss_bf16_probs_computed_in_fp32():
    probs_NE = torch.full((4, 2), 0.5, dtype=torch.bfloat16)
    loss = load_balancing_loss(probs_NE=probs_NE, expert_counts_E=torch.tensor([4, 0]), top_k=1)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(2 * 1.0 * 0.5)


def test_router_z_loss_hand_computed():
    logits_NE = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    lse0 = math.log(2.0)
    lse1 = math.log(math.exp(1.0) + math.exp(2.0))
    expected = (lse0**2 + lse1**2) / 2
    assert router_z_loss(logits_NE=logits_NE).item() == pytest.approx(expected, rel=1e-6)
    assert router_z_loss(logits_NE=logits_NE.bfloat16()).dtype == torch.float32
