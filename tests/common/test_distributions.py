"""Gaussian likelihoods and KL divergences (sb3_mb.common.distributions) against torch.distributions."""

import torch
from torch.distributions import Independent, Normal, kl_divergence

from sb3_mb.common.distributions import LOG_2PI, gaussian_kl, gaussian_nll, standard_normal_kl


def test_gaussian_nll_is_the_negative_log_density():
    torch.manual_seed(0)
    x, mean, log_var = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    expected = -Normal(mean, torch.exp(0.5 * log_var)).log_prob(x)
    torch.testing.assert_close(gaussian_nll(x, mean, log_var), expected)
    torch.testing.assert_close(gaussian_nll(x, mean), -Normal(mean, 1.0).log_prob(x))
    torch.testing.assert_close(gaussian_nll(x, mean, log_var, constant=False), expected - 0.5 * LOG_2PI)


def test_kl_divergences_sum_over_the_event_dimension():
    torch.manual_seed(1)
    mean_p, mean_q = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    std_p, std_q = torch.rand(2, 5, 3) + 0.1, torch.rand(2, 5, 3) + 0.1
    p, q = Independent(Normal(mean_p, std_p), 1), Independent(Normal(mean_q, std_q), 1)
    kl = gaussian_kl(mean_p, std_p, mean_q, std_q)
    assert kl.shape == (2, 5)
    torch.testing.assert_close(kl, kl_divergence(p, q))
    unit = Independent(Normal(torch.zeros_like(mean_p), torch.ones_like(std_p)), 1)
    torch.testing.assert_close(standard_normal_kl(mean_p, std_p), kl_divergence(p, unit))
    assert torch.allclose(gaussian_kl(mean_p, std_p, mean_p, std_p), torch.zeros(2, 5), atol=1e-6)
