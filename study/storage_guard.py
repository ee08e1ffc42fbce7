"""Trust in the Tune storage on ``--resume``: only files this driver wrote are unpickled.

Ray unpickles its own files in ``--storage-path`` when a study resumes (``tuner.pkl``, the pickled
blobs inside ``experiment_state-*.json``, ``search_gen_state-*.json``, ``searcher-state-*.pkl``,
``basic-variant-state-*.json``, ``callback-states-*.pkl``; trial folders hold ``params.pkl`` and
``error.pkl``), and ``study.reconcile`` reads the experiment state through
``tune.ExperimentAnalysis``. A file planted there runs code in the driver. So the driver signs what
it writes, and refuses to resume when any such file differs from what it signed.

Threat model. The attacker can write the storage (a shared NFS path or bucket, a study folder copied
from elsewhere) but cannot read the driver user's key file nor run code as that user. Protected:
every file Ray's resume downloads or unpickles from an experiment folder (each top-level ``*.json``
and ``*.pkl``, and each ``*.pkl`` of a trial folder), checked before ``Tuner.restore`` and before
``ExperimentAnalysis`` reads the state. Not protected: a file swapped while the driver runs or between
the check and Ray's read (the check reads the storage once, Ray reads it again); replaying an older
file the driver itself signed (it holds no code the driver did not write); trial checkpoints (loaded
by ``torch.load(weights_only=True)``, never unpickled as code); anyone holding the key or the
user's account.

The key is 32 random bytes in a local file outside the storage (``$GAZE_STUDY_STORAGE_KEY``, else
``$XDG_CONFIG_HOME/gaze-study/storage.key``, else ``~/.config/gaze-study/storage.key``), created mode
0600 on first use and refused when others may read it. Each experiment folder holds one manifest,
``.gaze-study-signatures``: the SHA-256 of every guarded file (its last ``HISTORY`` versions), the
study and experiment names, and an HMAC-SHA256 of all that. It sits inside the folder so a copied or
moved study keeps it; its name has no ``.json`` / ``.pkl`` ending, so Ray's resume never downloads
it into its staging folder and its sync never writes over it.

When the driver signs. ``tuner.pkl`` right after the Tuner writes it (``sign_files``). Tune writes
the rest into a local staging folder that a background thread uploads; ``StorageSigner`` (a Tune
callback) signs the staged files from ``get_state``, which Tune calls inside every experiment save
BEFORE the upload starts, and at the experiment's end. So a version is signed before it reaches the
storage and the previous ones stay signed: after a ``kill -9`` at any moment the storage holds
signed files, or an empty one (accepted: no code), or one torn mid-upload (which Ray cannot read
either). The way out, for a study the user vouches for (signed with another key, or before this
module): the explicit ``python -m study.storage_guard trust <storage>/<study>``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ray import tune

log = logging.getLogger(__name__)

KEY_ENV = "GAZE_STUDY_STORAGE_KEY"  # path of the key file (overrides the XDG default)
MANIFEST = ".gaze-study-signatures"
TUNER_FILE = "tuner.pkl"
HISTORY = 8  # versions kept per file: those staged but maybe not uploaded yet, and the uploaded one
_TOP = (".json", ".pkl")  # Ray's resume downloads every top-level file with these endings
_MANIFEST_MAX = 64 * 1024**2  # the manifest is input: never read an unbounded file
_RACY_NS = 2 * 10**9  # a file this recent may change again within the same mtime tick: rehash
_EMPTY = hashlib.sha256(b"").hexdigest()
_REFUSED = "refusing to resume (Ray would unpickle it)"
_TRUST_HINT = "if you vouch for this storage, re-sign it with: python -m study.storage_guard trust"


class UntrustedStorage(SystemExit):
    """The storage (or the key) cannot be trusted; the message names the file. A SystemExit, like
    the driver's other refusals: the command ends with the message (the parent run is closed)."""

    def __init__(self, path: str, reason: str, hint: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {reason}" + (f"; {hint}" if hint else ""))


def key_file() -> Path:
    """Where the signing key lives (never inside the storage it protects)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gaze-study" / "storage.key"


def load_key(*, create: bool) -> bytes | None:
    """The key; created (mode 0600) when ``create`` and absent, else None when absent.

    Raises:
        UntrustedStorage: the key file is readable or writable by others, or not a key.
    """
    path = key_file()
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        try:  # link, not rename: a key another driver made meanwhile is kept, never half-read
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = path.stat().st_mode
    if mode & 0o077:  # whoever reads it can sign planted files
        raise UntrustedStorage(
            str(path), f"the storage key is open to other users (mode {oct(mode & 0o777)})",
            f"chmod 600 {path}",
        )  # fmt: skip
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise UntrustedStorage(str(path), "not a storage key (expected 32 bytes in hex)")
    return key


def _fs(path: str):
    """(pyarrow filesystem, path on it) of a local path or a storage URI (s3://, gs://...)."""
    import pyarrow.fs

    if "://" not in path:
        path = os.path.abspath(path)
    return pyarrow.fs.FileSystem.from_uri(path)


def _guarded_in_storage(fs: Any, root: str) -> list[str]:
    """Relative paths of the files Ray's resume may unpickle: top-level ``*.json`` / ``*.pkl``
    and each trial folder's ``*.pkl``."""
    from pyarrow.fs import FileSelector, FileType

    out = []
    for info in fs.get_file_info(FileSelector(root, allow_not_found=True)):
        if info.type == FileType.Directory:
            for sub in fs.get_file_info(FileSelector(info.path)):
                if sub.type != FileType.Directory and sub.base_name.endswith(".pkl"):
                    out.append(f"{info.base_name}/{sub.base_name}")
        elif info.base_name != MANIFEST and info.base_name.endswith(_TOP):
            out.append(info.base_name)
    return sorted(out)


def _guarded_in_staging(staging: Path) -> list[str]:
    top = [e.name for e in os.scandir(staging) if e.is_file() and e.name.endswith(_TOP)]
    subs = [f"{e.name}/{p}" for e in os.scandir(staging) if e.is_dir() for p in os.listdir(e)]
    return sorted(top + [s for s in subs if s.endswith(".pkl")])


def _digest(stream: Any) -> str:
    h = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _digest_in_storage(fs: Any, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return _digest(f)


def _experiment_id(root: str) -> str:
    """``<study>/<experiment>``: binds a manifest to its experiment, not to where it is mounted."""
    parts = root.rstrip("/").split("/")
    return "/".join(parts[-2:])


def _body(experiment: str, files: dict[str, list[str]]) -> bytes:
    doc = {"version": 1, "experiment": experiment, "files": files}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _read_manifest(fs: Any, root: str, key: bytes | None) -> dict[str, list[str]] | None:
    """The signed digests (None: no manifest).

    Raises:
        UntrustedStorage: a manifest that is not valid, not for this experiment, or not signed
            with this key.
    """
    from pyarrow.fs import FileType

    path = f"{root}/{MANIFEST}"
    info = fs.get_file_info(path)
    if info.type == FileType.NotFound:
        return None
    if key is None:
        raise UntrustedStorage(path, f"no storage key at {key_file()} to check it", _TRUST_HINT)
    if info.size is None or info.size > _MANIFEST_MAX:
        raise UntrustedStorage(path, "not a signature manifest (too large)")
    with fs.open_input_stream(path) as f:
        raw = f.read()
    try:
        doc = json.loads(raw)
        body = doc["body"]
        files = {str(k): [str(d) for d in v] for k, v in body["files"].items()}
        signed = _body(str(body["experiment"]), files)
        mac = str(doc["mac"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UntrustedStorage(path, "not a signature manifest") from None
    if not hmac.compare_digest(mac, _mac(key, signed)):
        raise UntrustedStorage(path, "its signature does not match this driver's key", _TRUST_HINT)
    if body["experiment"] != _experiment_id(root):
        raise UntrustedStorage(path, f"signed for experiment {body['experiment']!r}")
    return files


def _write_manifest(fs: Any, root: str, key: bytes, files: dict[str, list[str]]) -> None:
    """Write atomically (temp file, then rename): a reader sees the old or the new manifest."""
    body = _body(_experiment_id(root), files)
    doc = json.dumps({"body": json.loads(body), "mac": _mac(key, body)}, sort_keys=True)
    tmp = f"{root}/{MANIFEST}.{os.getpid()}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(doc.encode())
    fs.move(tmp, f"{root}/{MANIFEST}")


def _add(files: dict[str, list[str]], rel: str, digest: str) -> bool:
    """Put ``digest`` first in ``rel``'s history; True when the manifest changed."""
    seen = files.get(rel, [])
    if seen[:1] == [digest]:
        return False
    files[rel] = [digest, *(d for d in seen if d != digest)][:HISTORY]
    return True


# -- what the driver calls ----------------------------------------------------------------------


def verify_experiment(path: str) -> None:
    """Check every file Ray's resume may unpickle in the experiment folder ``path`` against the
    manifest this driver signed. Call before ``Tuner.restore`` and before ``ExperimentAnalysis``.

    Raises:
        UntrustedStorage: naming the first file (in the storage) that is unsigned or changed, or
            the manifest when it is missing, damaged or signed with another key.
    """
    fs, root = _fs(path)
    guarded = _guarded_in_storage(fs, root)
    if not guarded:
        return
    files = _read_manifest(fs, root, load_key(create=False))
    if files is None:
        raise UntrustedStorage(
            f"{path}/{guarded[0]}", f"not signed by this driver (no {MANIFEST}): {_REFUSED}",
            f"{_TRUST_HINT} {path}",
        )  # fmt: skip
    for rel in guarded:
        digest = _digest_in_storage(fs, f"{root}/{rel}")
        # Empty: Tune's upload truncates before it writes (a kill -9 can leave that); no code.
        if digest != _EMPTY and digest not in files.get(rel, ()):
            what = "changed since this driver wrote it" if rel in files else "not written by it"
            raise UntrustedStorage(f"{path}/{rel}", f"{what}: {_REFUSED}", f"{_TRUST_HINT} {path}")


def sign_files(path: str, names: Iterable[str]) -> None:
    """Add the storage's current ``names`` (relative to the experiment folder ``path``) to its
    manifest: for files the driver has just written there itself (``tuner.pkl``)."""
    key = load_key(create=True)
    fs, root = _fs(path)
    files = _read_manifest(fs, root, key) or {}
    changed = [_add(files, rel, _digest_in_storage(fs, f"{root}/{rel}")) for rel in names]
    if any(changed):
        _write_manifest(fs, root, key, files)


def trust_experiment(path: str) -> list[str]:
    """Sign every guarded file now in the experiment folder ``path``: the user's explicit way out
    (they vouch that nobody else wrote it). Returns the files signed."""
    key = load_key(create=True)
    fs, root = _fs(path)
    guarded = _guarded_in_storage(fs, root)
    _write_manifest(fs, root, key, {r: [_digest_in_storage(fs, f"{root}/{r}")] for r in guarded})
    return guarded


class StorageSigner(tune.Callback):
    """Signs the files Tune stages for upload, before they reach the storage (see the module
    docstring). Picklable without its key: Tune keeps callbacks in ``tuner.pkl``, in the storage.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._trials: Sequence[Any] = ()
        self._files: dict[str, list[str]] | None = None
        self._stamps: dict[str, tuple[int, int]] = {}
        self._failed = False

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._reset()

    def on_step_begin(self, iteration: int, trials: Sequence[Any], **info: Any) -> None:
        # Tune passes its own trial list: trials added later in this step are in it by the save.
        self._trials = trials

    def get_state(self) -> None:
        """Called by Tune inside each experiment save, before the upload: sign what it staged.
        Returns None: no state to save, so no callback-states file."""
        self._sign()

    def on_experiment_end(self, trials: Sequence[Any], **info: Any) -> None:
        self._trials = trials
        self._sign()

    def _sign(self) -> None:
        if self._trials and not self._failed:
            try:
                self._sign_staging(self._trials[0].storage)
            except (OSError, SystemExit) as err:  # never stop a study for it; resume refuses
                self._failed = True
                log.warning("could not sign the Tune storage (%s); --resume will refuse it", err)

    def _sign_staging(self, storage: Any) -> None:
        staging = Path(storage.experiment_driver_staging_path)
        if not staging.is_dir():
            return
        fs, root = storage.storage_filesystem, storage.experiment_fs_path
        key = load_key(create=True)
        if self._files is None:
            try:
                self._files = _read_manifest(fs, root, key) or {}
            except UntrustedStorage as err:  # changed during the run: start over, loudly
                log.warning("%s; signing anew", err)
                self._files = {}
        changed, now = False, time.time_ns()
        for rel in _guarded_in_staging(staging):
            st = (staging / rel).stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if self._stamps.get(rel) == stamp and now - st.st_mtime_ns > _RACY_NS:
                continue
            with open(staging / rel, "rb") as f:
                changed |= _add(self._files, rel, _digest(f))
            self._stamps[rel] = stamp
        if changed:
            _write_manifest(fs, root, key, self._files)


# -- command line -------------------------------------------------------------------------------


def _experiments(path: str) -> list[str]:
    """``path`` itself when it is an experiment folder, else the experiment folders in it."""
    from pyarrow.fs import FileSelector, FileType

    fs, root = _fs(path)
    if fs.get_file_info(f"{root}/{TUNER_FILE}").type != FileType.NotFound:
        return [path]
    subs = sorted(s.base_name for s in fs.get_file_info(FileSelector(root, allow_not_found=True)))
    found = [s for s in subs if fs.get_file_info(f"{root}/{s}/{TUNER_FILE}").size is not None]
    return [f"{path.rstrip('/')}/{s}" for s in found]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m study.storage_guard {verify,trust} PATH`` (a study folder or one experiment)."""
    p = argparse.ArgumentParser(
        prog="python -m study.storage_guard",
        description="Check, or re-sign after you vouch for it, the Tune storage of a study "
        "(files Ray unpickles on --resume).",
    )
    p.add_argument("action", choices=("verify", "trust"))
    p.add_argument("path", help="<storage-path>/<study> or one experiment folder in it")
    args = p.parse_args(argv)
    found = _experiments(args.path)
    if not found:
        print(f"error: {args.path}: no Tune experiment (no {TUNER_FILE})", file=sys.stderr)
        return 2
    for exp in found:
        if args.action == "trust":
            signed = trust_experiment(exp)
            print(f"signed {len(signed)} files in {exp} with {key_file()}: {', '.join(signed)}")
        else:
            try:
                verify_experiment(exp)
            except UntrustedStorage as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            print(f"ok: {exp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
