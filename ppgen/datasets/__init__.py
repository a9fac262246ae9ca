"""Small embedded datasets, and a checked CSV reader for your own tables.

Embedded sets ship inside the package (``ppgen/datasets/data/``) so examples,
tests and ``ppgen demo`` never touch the network::

    >>> import ppgen
    >>> ppgen.datasets.names()
    ['digits', 'earthquakes', 'eight_schools', 'faithful', 'geyser']
    >>> ppgen.datasets.load("faithful").shape
    (272, 2)

``describe(name)`` gives each set's source and licence (``data/PROVENANCE.md``).
``read_csv(path)`` reads a user's CSV into a DataFrame of numeric columns and
raises :class:`ppgen.errors.DatasetError` / :class:`ppgen.errors.DataError`
naming the file, column and row at fault. ``load_mnist(root)`` reads MNIST's
IDX files and ``load_binarized_mnist(path)`` the fixed-binarization set.
``ring(n)`` and ``grid(n)`` draw from the 2-D Gaussian-mixture targets of
PacGAN/VEEGAN, whose centres and std ``mixture_modes(name)`` gives;
``sticky_sequences(n)`` short sequences of a two-state HMM.
``load_posteriordb(name, root)`` reads a posterior, its data, Stan code and
reference draws from a local copy of posteriordb.
"""

from ..models.synthetic import grid, mixture_modes, ring, sticky_sequences, two_moons
from .embedded import describe, load, names
from .images import load_binarized_mnist, load_digits, load_mnist, read_idx
from .posteriordb import load_posteriordb, posteriordb_names
from .tables import read_csv, select_columns

__all__ = ["load", "names", "describe", "read_csv", "select_columns", "load_digits", "load_mnist",
           "load_binarized_mnist", "read_idx", "load_posteriordb", "posteriordb_names",
           "ring", "grid", "mixture_modes", "two_moons", "sticky_sequences"]
