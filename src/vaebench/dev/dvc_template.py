"""The offline page template of ``dvc plots show`` (.dvc/config ``plots.html_template``): vega, vega-lite and
vega-embed from the npm registry, SHA-512 checked against the pins and inlined; the first line stamps the pins."""
from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple

TEMPLATE = ".dvc/plots/offline.html"
REGISTRY = "https://registry.npmjs.org"


class NpmPackage(NamedTuple):
    name: str
    version: str
    script: str       # path of the browser build inside the tarball
    integrity: str    # the registry's dist.integrity: "sha512-" + base64(SHA-512)

    def tarball_url(self, registry: str = REGISTRY) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.name}-{self.version}.tgz"


PACKAGES = (
    NpmPackage("vega", "5.20.2", "package/build/vega.min.js",
               "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    NpmPackage("vega-lite", "5.2.0", "package/build/vega-lite.min.js",
               "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    NpmPackage("vega-embed", "6.18.2", "package/build/vega-embed.min.js",
               "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
)

PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plots (offline)</title>
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
__SCRIPTS__
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def stamp(packages=PACKAGES) -> str:
    """The page's first line: which packages (and tarball hashes) it inlines."""
    return "<!-- vaebench dvc-template: " + " ".join(
        f"{p.name}@{p.version}={p.integrity}" for p in packages) + " -->\n"


def missing_message(path: str | Path = TEMPLATE) -> str:
    return (f"{path} is missing or out of date: `dvc plots show` needs it to render offline (with a missing "
            "file DVC reports \"HTML template has to contain '{plot_divs}'\"). Build it with `make install` "
            "or `python -m vaebench dvc-template` (downloads vega, vega-lite and vega-embed from the npm "
            "registry).")


def is_current(path: str | Path = TEMPLATE, packages=PACKAGES) -> bool:
    """Whether ``path`` exists and inlines exactly the pinned packages."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as f:
        return f.readline() == stamp(packages).rstrip("\n") + "\n"


def check_integrity(data: bytes, integrity: str, what: str = "tarball") -> None:
    """Raise ValueError unless ``data`` has the npm ``integrity`` (``sha512-<base64>``)."""
    algo, _, expected = integrity.partition("-")
    if algo != "sha512":
        raise ValueError(f"{what}: unsupported integrity {integrity!r} (sha512 expected)")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != expected:
        raise ValueError(f"{what}: SHA-512 mismatch: expected sha512-{expected}, got sha512-{got}")


def download(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def package_script(package: NpmPackage, tarball: bytes) -> str:
    """The browser build of ``package`` from its (verified) tarball, safe to inline in a ``<script>``."""
    check_integrity(tarball, package.integrity, f"{package.name}@{package.version}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(package.script)
        if member is None:
            raise ValueError(f"{package.name}@{package.version}: {package.script} is not a file")
        js = member.read().decode("utf-8")
    js = js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    for placeholder in PLACEHOLDERS:
        if placeholder in js:
            raise ValueError(f"{package.name}@{package.version} contains DVC's placeholder {placeholder}")
    return js


def page(scripts: dict[str, str], packages=PACKAGES) -> str:
    """The template text: the stamp, then DVC's page with one inline ``<script>`` per package."""
    tags = "\n".join(f'    <script type="text/javascript">/* {p.name}@{p.version} */\n{scripts[p.name]}\n    </script>'
                     for p in packages)
    return stamp(packages) + PAGE.replace("__SCRIPTS__", tags)


def build(path: str | Path = TEMPLATE, registry: str = REGISTRY, force: bool = False,
          fetch: Callable[[str], bytes] = download, packages=PACKAGES) -> bool:
    """Write the template to ``path`` unless current; True if written. Raises OSError (download) or ValueError
    (SHA-512 mismatch), writing nothing."""
    from vaebench.atomic import write_text

    if not force and is_current(path, packages):
        return False
    scripts = {}
    for p in packages:
        url = p.tarball_url(registry)
        try:
            tarball = fetch(url)
        except OSError as exc:
            raise OSError(f"cannot download {url}: {exc}") from exc
        scripts[p.name] = package_script(p, tarball)
    write_text(path, page(scripts, packages))
    return True


def main(path: str | Path = TEMPLATE, check: bool = False, force: bool = False, registry: str = REGISTRY) -> int:
    """The ``dvc-template`` command: build (or, with ``check``, only check) the template."""
    if check:
        if is_current(path):
            return 0
        print(missing_message(path), file=sys.stderr)
        return 1
    if build(path, registry=registry, force=force):
        print(f"wrote {path} ({', '.join(f'{p.name}@{p.version}' for p in PACKAGES)}, SHA-512 checked)")
    else:
        Path(path).touch()
        print(f"{path} is up to date")
    return 0
