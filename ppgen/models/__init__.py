"""Model families, each a ``GenerativeModel``; ``registry`` lists them all."""

from . import registry
from .bayesnet import BayesianNetwork
from .conjugate import BetaBernoulli, ConjugateNormal
from .factor import PPCA, FactorAnalysis
from .hmm import BernoulliHMM, CategoricalHMM, GaussianHMM, PoissonHMM
from .mixture import GaussianMixture

for _cls in (GaussianMixture, PPCA, FactorAnalysis, ConjugateNormal, BetaBernoulli,
             BayesianNetwork):
    registry.register(_cls)

__all__ = ["BayesianNetwork", "CategoricalHMM", "GaussianHMM", "PoissonHMM", "BernoulliHMM",
           "GaussianMixture", "PPCA", "FactorAnalysis", "ConjugateNormal", "BetaBernoulli",
           "registry"]
