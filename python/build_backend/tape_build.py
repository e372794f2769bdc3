"""A minimal PEP 517 build backend for the ``tape`` package, standard library
only, so that ``pip install ./python`` works with no package index.

It builds a pure-Python wheel holding ``tape/`` and an sdist of this folder.
Name, version, summary and Python requirement come from ``pyproject.toml``'s
``[project]`` table (read with a small line parser: ``tomllib`` is not in
every Python this package supports).
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "tape"


def _project():
    """The string keys of ``[project]`` in pyproject.toml."""
    out = {}
    section = None
    with open(os.path.join(HERE, "pyproject.toml"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            m = re.match(r"^\[(.+)\]$", line)
            if m:
                section = m.group(1)
                continue
            if section != "project":
                continue
            m = re.match(r'^([A-Za-z0-9_-]+)\s*=\s*"([^"]*)"', line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def _names():
    p = _project()
    dist = re.sub(r"[-_.]+", "_", p["name"]).lower()
    return p, dist, p["version"]


def _metadata():
    p, _, version = _names()
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {p['name']}",
        f"Version: {version}",
        f"Summary: {p.get('description', '')}",
        f"Requires-Python: {p.get('requires-python', '>=3')}",
        "License: MIT OR Apache-2.0",
        "Provides-Extra: fast",
        "Requires-Dist: crc32c; extra == \"fast\"",
        "Provides-Extra: nats",
        "Requires-Dist: nats-py; extra == \"nats\"",
    ]
    readme = os.path.join(HERE, "README.md")
    text = ""
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            text = f.read()
    return "\n".join(lines) + "\n\n" + text


def _package_files():
    root = os.path.join(HERE, PACKAGE)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".py", ".typed")):
                full = os.path.join(dirpath, name)
                yield full, os.path.relpath(full, HERE).replace(os.sep, "/")


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory, files):
    _, dist, version = _names()
    name = f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    extra = {
        f"{info}/METADATA": _metadata().encode("utf-8"),
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tape_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ).encode(),
        f"{info}/top_level.txt": f"{PACKAGE}\n".encode(),
    }
    record = []
    path = os.path.join(wheel_directory, name)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in list(files) + list(extra.items()):
            z.writestr(arcname, data)
            record.append(_record_line(arcname, data))
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = []
    for full, arcname in _package_files():
        with open(full, "rb") as f:
            files.append((arcname, f.read()))
    return _write_wheel(wheel_directory, files)


def build_sdist(sdist_directory, config_settings=None):
    _, dist, version = _names()
    base = f"{dist}-{version}"
    name = f"{base}.tar.gz"
    members = ["pyproject.toml", "README.md", "build_backend/tape_build.py"]
    members += [arc for _, arc in _package_files()]
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as t:
        for arc in members:
            full = os.path.join(HERE, arc)
            if os.path.exists(full):
                t.add(full, arcname=f"{base}/{arc}")
        pkg_info = _metadata().encode("utf-8")
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(pkg_info)
        t.addfile(ti, io.BytesIO(pkg_info))
    return name
