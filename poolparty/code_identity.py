"""Which code a map would run, for its identity (see ``maps.map_identity``).

Results an earlier run left in the work_dir may be reused only when the code that made
them is the code that would run now. The pickled function covers a function pickled by
value, but not a function pickled by reference (``mylib.work``), a lambda calling a
module, nor the classes of the tasks: the jobs import those from their files, whatever
those files hold by then. So every module loaded in the client whose file is the
user's own code (not under the installation: ``sys.prefix``, ``sys.base_prefix``,
``sys.exec_prefix``, where the standard library and site-packages live, nor in any
other ``site-packages`` or ``dist-packages`` directory) goes into the identity by the
bytes of its file. This is conservative: a change to any module of the
user's makes a new map. Installed packages are not hashed; their versions are recorded
in map.json (:func:`installed_versions`).

Each file is read again only when its (mtime, ctime, size, inode) changed, so a map
costs one ``stat`` per user module.
"""

from __future__ import annotations

import hashlib
import os
import sys
from types import ModuleType

#: file -> (its stat signature, the digest of its bytes)
_FILE_DIGESTS: dict[str, tuple[tuple[int, ...], str]] = {}
#: directories of installed packages wherever they are: ``pip install --user``
#: (~/.local), a cluster's module system, a PYTHONPATH to someone else's installation
_PACKAGE_DIRS = {"site-packages", "dist-packages"}
#: module file as given -> its real path if it is the user's own code, else None
_OWN_FILES: dict[str, str | None] = {}


def user_code_digest() -> str:
    """A digest of every user module file loaded in this process, by path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(user_module_files()):
        file_digest = _file_digest(path)
        if file_digest is not None:  # gone since it was imported: no job can import it
            digest.update(f"{path}\0{file_digest}\0".encode())
    return digest.hexdigest()


def user_module_files() -> set[str]:
    """Real paths of the files of loaded modules that are the user's own code."""
    files = set()
    for module in list(sys.modules.values()):
        path = _own_file(module)
        if path is not None:
            files.add(path)
    return files


def _installed_roots() -> tuple[str, ...]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return tuple(os.path.realpath(prefix) + os.sep for prefix in prefixes)


def _poolparty_root() -> str:
    """poolparty itself is not the user's code, even when run from a checkout: its
    version is recorded instead."""
    return os.path.dirname(os.path.realpath(__file__)) + os.sep


def _own_file(module: ModuleType) -> str | None:
    name = getattr(module, "__file__", None)
    if not isinstance(name, str):
        return None  # built in, a namespace package, or __main__ of a notebook
    if name not in _OWN_FILES:
        path = os.path.realpath(name)
        installed = path.startswith((*_installed_roots(), _poolparty_root())) or any(
            part in _PACKAGE_DIRS for part in path.split(os.sep))
        _OWN_FILES[name] = None if installed else path
    return _OWN_FILES[name]


def _file_digest(path: str) -> str | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    signature = (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)
    known = _FILE_DIGESTS.get(path)
    if known is not None and known[0] == signature:
        return known[1]
    try:
        with open(path, "rb") as file:
            file_digest = hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None
    _FILE_DIGESTS[path] = (signature, file_digest)
    return file_digest


def installed_versions() -> dict[str, str]:
    """The version of each installed top-level package loaded here, for map.json: what
    a user checks when results of an earlier run are reused (they are not part of the
    identity: an upgrade of numpy does not make a new map)."""
    versions = {}
    for name, module in list(sys.modules.items()):
        if "." in name or name.startswith("_") or _own_file(module) is not None:
            continue
        version = getattr(module, "__version__", None)
        if isinstance(version, str) and getattr(module, "__file__", None):
            versions[name] = version
    return dict(sorted(versions.items()))
