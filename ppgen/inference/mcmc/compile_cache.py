"""Where compiled code lives: a private directory of the user's, never a shared one.

TorchInductor writes the kernels it compiles (C++ shared libraries, Python modules) to a
cache directory and loads them back on later runs; by default a folder under the shared
system temporary directory, which another local user could create first and fill with
libraries of their own. ppgen points TorchInductor at ``$PPGEN_CACHE_DIR/inductor``
(default ``$XDG_CACHE_HOME/ppgen`` or ``~/.cache/ppgen``), created with mode ``0700``; a
directory the user set in ``TORCHINDUCTOR_CACHE_DIR`` is used instead. Importing
TorchInductor writes its shared default (``<tmp>/torchinductor_<user>``) into that variable
itself, so that value is never taken for the user's choice; and its precompiled headers,
which it keeps under that shared default whatever the variable says, go to the private
cache during ppgen's compiles (:func:`.inductor.build_settings`). Before anything is
compiled or loaded, the cache and the folders ppgen created for it must be real
directories (not links), owned by the user and writable by no one else; otherwise
the accelerators refuse (:class:`~.fallback.Refused`, logged at WARNING) and the fit goes on
without compiled code.
"""

from __future__ import annotations

import getpass
import os
import re
import stat
import tempfile
from pathlib import Path

from .fallback import Unsafe

#: The environment variable naming ppgen's cache folder.
CACHE_ENV = "PPGEN_CACHE_DIR"
#: TorchInductor's own variable (read by it at every compile).
INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"


def cache_root() -> Path:
    """``$PPGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/ppgen``, else ``~/.cache/ppgen``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().absolute() / "ppgen"


def private_directory(path: Path) -> Path:
    """``path`` created with mode ``0700`` if missing, then checked: a directory (not a
    symbolic link) owned by this user that no one else may write to or read; raises
    :class:`~.fallback.Unsafe` naming the path and what is wrong."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise Unsafe(f"cannot create the compile cache {str(path)!r}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise Unsafe(f"the compile cache {str(path)!r} is not a directory (a link or a file)")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise Unsafe(f"the compile cache {str(path)!r} belongs to another user (uid {info.st_uid}); "
                     f"point {INDUCTOR_ENV} (if set) or {CACHE_ENV} at a folder of your own")
    if info.st_mode & 0o022:
        raise Unsafe(f"the compile cache {str(path)!r} is writable by other users (mode "
                     f"{oct(info.st_mode & 0o777)}); remove it, or point {INDUCTOR_ENV} (if set) or {CACHE_ENV} "
                     "at a private folder")
    return path


def use_private_cache() -> Path:
    """Point TorchInductor at the user's private cache, or check the one the user chose in
    ``TORCHINDUCTOR_CACHE_DIR`` (or that an earlier compile in this process set); returns
    the folder."""
    chosen = os.environ.get(INDUCTOR_ENV)
    if chosen and Path(chosen).expanduser().absolute() != inductor_default():
        return private_directory(Path(chosen).expanduser().absolute())
    folder = private_directory(private_directory(cache_root()) / "inductor")
    os.environ[INDUCTOR_ENV] = str(folder)
    return folder


def inductor_default() -> Path:
    """TorchInductor's shared default cache, ``<tmp>/torchinductor_<user>``: the value its
    import leaves in ``TORCHINDUCTOR_CACHE_DIR`` when the user set none."""
    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
    return Path(tempfile.gettempdir()).absolute() / ("torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))
