"""Where a dataset's files come from (the offline mirror, or a download into ``raw_dir``), checksum checks and
gzip reading."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import urllib.request
import zlib
from pathlib import Path
from typing import Any

from vaebench.atomic import atomic_path
from vaebench.data.common import DataIntegrityError, DatasetDownloadError, MirrorError
from vaebench.data.sources import DatasetSource
from vaebench.errors import one_line
from vaebench.registry import StrictConfig

ALGORITHM_NAMES = {"md5": "MD5", "sha256": "SHA-256"}


def file_digests(path: str | os.PathLike, algorithms: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """{algorithm: hex digest} of the file at ``path``, read in 1 MiB chunks."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def check_digests(shown: str, expected: dict[str, str | None], actual: dict[str, str]) -> None:
    """Raises DataIntegrityError ``"<MD5|SHA-256> mismatch for <shown>: expected .., got .."`` (MD5 first; an
    algorithm without a recorded sum is skipped)."""
    for algo in ("md5", "sha256"):
        want = expected.get(algo)
        if want is not None and actual[algo] != want:
            raise DataIntegrityError(f"{ALGORITHM_NAMES[algo]} mismatch for {shown}: expected {want}, got "
                                     f"{actual[algo]}")


def verify_file(source: DatasetSource, folder: str | os.PathLike, fname: str) -> dict[str, str]:
    """{"md5", "sha256"} of ``<folder>/<fname>`` after checking the sums ``source`` records (FileNotFoundError,
    DataIntegrityError)."""
    path = Path(folder) / fname
    if not path.is_file():
        raise FileNotFoundError(f"dataset file missing: expected {path}")
    expected = {"md5": source.md5.get(fname), "sha256": source.sha256.get(fname)}
    if not any(expected.values()):
        raise KeyError(f"no checksum recorded for {fname}")
    actual = file_digests(path)
    check_digests(str(path), expected, actual)
    return actual


def gunzip(raw: bytes, path: Path) -> bytes:
    """The decompressed gzip data ``raw`` read from ``path``; DataIntegrityError names the file if it is invalid."""
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataIntegrityError(f"{path}: not valid gzip data ({one_line(exc)}): the file is truncated or "
                                 "corrupted; replace it with an intact copy") from None


def read_maybe_gz(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped if its name ends with ``.gz``; DataIntegrityError names invalid gzip."""
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataIntegrityError(f"{path}: not valid gzip data ({one_line(exc)}): the file is truncated or "
                                     "corrupted; replace it with an intact copy") from None
    return path.read_bytes()


def find_file(folder: Path, name: str) -> Path:
    """``<folder>/<name>.gz`` or else ``<folder>/<name>``; FileNotFoundError names both."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"dataset file missing: expected {folder / name}.gz or {folder / name}")


def _setting(cfg: StrictConfig | dict | None, key: str) -> Any:
    if cfg is None:
        return None
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def required_files(source: DatasetSource, cfg: StrictConfig | dict | None = None) -> list[str]:
    """The files preparing ``source`` with settings ``cfg`` (None: defaults) reads: all but an optional file whose
    setting is false."""
    optional = source.optional_files
    return [f for f in source.files.values() if f not in optional or _setting(cfg, optional[f])]


def mirror_layout(source: DatasetSource) -> str:
    """``  <mirror>/<subdir>/<file>[.gz]`` per file, one per line, optional files marked."""
    gz = "[.gz]" if source.gz_optional else ""
    optional = source.optional_files
    return "\n".join(f"  <mirror>/{source.mirror_subdir}/{f}{gz}"
                     + (f"   (optional: read only with {optional[f]}: true)" if f in optional else "")
                     for f in source.files.values())


def _layout_text(source: DatasetSource) -> str:
    return f"the mirror of {source.name!r} is laid out as\n{mirror_layout(source)}"


def _download_error(source: DatasetSource, urls: list[str], expected: list[Path], exc: BaseException
                    ) -> DatasetDownloadError:
    why = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(why) > 600:
        why = why[:597] + "..."
    return DatasetDownloadError(
        f"could not download dataset {source.name!r}: tried {', '.join(urls)} ({why}); expected file(s) "
        f"{', '.join(str(p) for p in expected)}; nothing was kept (no partial file, no folder this attempt created). "
        f"Without internet access, use an offline mirror laid out as\n{mirror_layout(source)}\nand pass --mirror "
        "<mirror> (or set VAEBENCH_DATA_MIRROR).")


@contextlib.contextmanager
def _undo_on_failure(root: Path):
    """If the block raises, remove every file and folder it created under ``root``, then ``root`` and its parents
    if it created them (each only when empty); files there before are kept."""
    created = []
    for p in (root, *root.parents):
        if p.exists():
            break
        created.append(p)
    before = set(root.rglob("*")) if root.is_dir() else set()
    try:
        yield
    except BaseException:
        if root.is_dir():
            for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
                if p in before:
                    continue
                with contextlib.suppress(OSError):
                    p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
        for p in created:
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def download_files(source: DatasetSource, raw_dir: str | os.PathLike, files: list[str]) -> Path:
    """Download ``files`` from ``source.urls`` into ``<raw_dir>/<mirror_subdir>/`` (a file already there is kept)
    and return that folder; each is written atomically once its MD5 (if recorded) matches.

    Raises:
        DatasetDownloadError: a network or disk failure; nothing this call created is left.
        DataIntegrityError: a downloaded file's MD5 differs (names URL, expected and actual).
    """
    folder = Path(raw_dir) / source.mirror_subdir
    tried: list[str] = []
    with _undo_on_failure(folder):
        for fname in files:
            target = folder / fname
            if target.is_file():
                continue
            url = source.urls[fname]
            tried.append(url)
            try:
                with urllib.request.urlopen(url, timeout=60) as resp, atomic_path(target) as tmp, \
                        open(tmp, "wb") as f:
                    md5 = hashlib.md5()
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        md5.update(chunk)
                        f.write(chunk)
                    f.flush()
                    check_digests(f"{url} (downloaded as {target}; not kept)",
                                  {"md5": source.md5.get(fname)}, {"md5": md5.hexdigest()})
            except DataIntegrityError:
                raise
            except Exception as exc:  # noqa: BLE001 - any network or disk failure: one message
                raise _download_error(source, tried, [folder / f for f in files], exc) from None
    return folder


def download_torchvision(source: DatasetSource, raw_dir: str | os.PathLike) -> tuple[Path, str]:
    """Download with ``torchvision.datasets.<torchvision_class>`` into ``<raw_dir>/<class>/raw/``; returns (folder,
    URLs). DatasetDownloadError on failure, nothing created left."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, source.torchvision_class)
    folder = Path(raw_dir) / source.torchvision_class / "raw"
    urls = [cls.mirrors[0] + f + ".gz" for f in source.files.values()]
    try:
        with _undo_on_failure(folder):
            cls(root=str(raw_dir), train=True, download=True)
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError / URLError / OSError
        raise _download_error(source, urls, [folder / f for f in source.files.values()], exc) from None
    return folder, " ".join(urls)


def check_mirror(source: DatasetSource, mirror: str | os.PathLike) -> Path:
    """``<mirror>/<mirror_subdir>/``; MirrorError names the missing root or folder and shows the layout."""
    root = Path(mirror)
    folder = root / source.mirror_subdir
    origin = "from --mirror or $VAEBENCH_DATA_MIRROR"
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise MirrorError(f"dataset mirror root {str(root)!r} ({origin}) {state}: expected the mirror folder of "
                          f"{source.name!r} at {folder}; {_layout_text(source)}")
    if not folder.is_dir():
        raise MirrorError(f"dataset mirror folder missing for {source.name!r}: expected {folder} (the mirror root "
                          f"{str(root)!r}, {origin}, has no {source.mirror_subdir}/ folder); {_layout_text(source)}")
    return folder


def missing_mirror_files(source: DatasetSource, folder: str | os.PathLike, cfg: StrictConfig | dict | None = None
                         ) -> MirrorError | None:
    """The MirrorError for the :func:`required_files` missing from mirror folder ``folder`` (naming each, what the
    folder holds, a ``.gz`` present only decompressed, and the layout), or None."""
    folder = Path(folder)
    gz = source.gz_optional
    missing = [f for f in required_files(source, cfg)
               if not ((folder / f).is_file() or (gz and (folder / f"{f}.gz").is_file()))]
    if not missing:
        return None
    optional = source.optional_files
    expected = ", ".join((f"{folder / f}[.gz]" if gz else str(folder / f))
                         + (f" (read with {optional[f]}: true)" if f in optional else "") for f in missing)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    held = ", ".join(present[:10]) + (f" and {len(present) - 10} more" if len(present) > 10 else "")
    plain = [f.removesuffix(".gz") for f in missing if f.endswith(".gz") and (folder / f.removesuffix(".gz")).exists()]
    hint = (f"; {', '.join(plain)} {'is' if len(plain) == 1 else 'are'} there decompressed, which cannot be verified: "
            "the official checksums are those of the gzipped files, so the mirror must hold the official .gz files "
            "as distributed" if plain else "")
    return MirrorError(f"dataset file missing from the mirror of {source.name!r}: expected {expected} (the folder "
                       f"holds {held or 'nothing'}){hint}; {_layout_text(source)}")


def resolve_source(source: DatasetSource, mirror: str | os.PathLike | None, raw_dir: str | os.PathLike,
                   cfg: StrictConfig | dict | None = None) -> tuple[Path, str]:
    """(folder holding the files, source description): ``<mirror>/<mirror_subdir>/``, or without a mirror the
    download folder under ``raw_dir`` (URLs, or torchvision's ``<raw_dir>/MNIST/raw/``).

    Raises:
        MirrorError: see :func:`check_mirror`. DatasetDownloadError: the download failed, or the source is never
            downloaded. DataIntegrityError: a downloaded file's MD5 differs.
    """
    if mirror is not None:
        folder = check_mirror(source, mirror)
        return folder, str(folder.resolve())
    if source.download_refusal is not None:
        raise DatasetDownloadError(source.download_refusal(mirror_layout(source)))
    if source.urls:
        files = required_files(source, cfg)
        return download_files(source, raw_dir, files), " ".join(source.urls[f] for f in files)
    return download_torchvision(source, raw_dir)
