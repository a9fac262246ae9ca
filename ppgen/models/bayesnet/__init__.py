"""Discrete Bayesian networks: the family, its variable elimination, and BIF files."""

from .bif import BIFError, BIFNetwork, parse_bif, read_bif
from .bif_writer import format_bif, write_bif
from .network import BayesianNetwork

__all__ = ["BayesianNetwork", "BIFError", "BIFNetwork", "parse_bif", "read_bif", "format_bif", "write_bif"]
