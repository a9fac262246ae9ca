"""Model families, a folder each, every one a ``GenerativeModel``.

``ppgen.registry`` lists them all (by name, with the methods each supports).
"""

from .. import registry
from .autoencoder import Autoencoder, DenoisingAutoencoder
from .bayesnet import BayesianNetwork
from .conjugate import BetaBernoulli, ConjugateNormal
from .diffusion import DDPM
from .factor import PPCA, FactorAnalysis
from .flows import MAF, NeuralSplineFlow, RealNVP
from .gan import GAN
from .hmm import BernoulliHMM, CategoricalHMM, GaussianHMM, PoissonHMM
from .mixture import GaussianMixture
from .rbm import BernoulliRBM, GaussianBernoulliRBM
from .vae import VAE, ConditionalVAE, ConvVAE

for _cls in (GaussianMixture, PPCA, FactorAnalysis, ConjugateNormal, BetaBernoulli,
             BayesianNetwork, BernoulliRBM, GaussianBernoulliRBM,
             VAE, ConvVAE, ConditionalVAE, Autoencoder, DenoisingAutoencoder,
             RealNVP, MAF, NeuralSplineFlow, DDPM, GAN):
    registry.register(_cls)

__all__ = ["BayesianNetwork", "CategoricalHMM", "GaussianHMM", "PoissonHMM", "BernoulliHMM",
           "GaussianMixture", "PPCA", "FactorAnalysis", "ConjugateNormal", "BetaBernoulli",
           "BernoulliRBM", "GaussianBernoulliRBM",
           "VAE", "ConvVAE", "ConditionalVAE", "Autoencoder", "DenoisingAutoencoder",
           "RealNVP", "MAF", "NeuralSplineFlow", "DDPM", "GAN", "registry"]
