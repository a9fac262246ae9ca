"""Neural building blocks shared by the deep families and by flow guides.

Not part of DESIGN.md's layout: both ``ppgen.models`` (VAEs, autoencoders,
flows) and ``ppgen.inference`` (the flow guide) need the same networks and
bijections, and neither may import the other, so they live here. This package
knows torch and Pyro only.
"""

from .networks import MLP, make_activation

__all__ = ["MLP", "make_activation"]
