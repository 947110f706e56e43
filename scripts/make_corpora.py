#!/usr/bin/env python3
"""Rebuild the bundled corpora under data/ from Debian packages (run once; outputs are committed).

English (source domain, public-domain novels shipped in MIT-licensed R packages):
  r-cran-janeaustenr (Austen x6), r-cran-tidytext (books.rda: Great Expectations, The War of the
  Worlds, Twenty Thousand Leagues under the Sea, ...), r-cran-tokenizers (Moby Dick).
Python code (target domain, PSF License 2.0): the CPython 3.11 standard library from
  libpython3.11-stdlib / libpython3.11-minimal.

Needs: apt-get (download only, nothing is installed), dpkg-deb, PyPI `rdata` (pip install rdata).
Writes data/english/{train.txt.gz,heldout.txt} and data/code/{train.txt.gz,heldout.txt}. Each
book/module is split by position: the last part of every book (and a fixed set of whole modules)
is held out, so forgetting evals and perplexity never see pretraining text.
"""

import gzip
import pathlib
import re
import subprocess
import tempfile
import zlib

import rdata

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "data"
HELDOUT_FRACTION = 0.08
# Whole stdlib modules held out for code perplexity (never trained on).
CODE_HELDOUT = ["fractions.py", "textwrap.py", "shlex.py", "bisect.py", "heapq.py", "colorsys.py", "graphlib.py"]
# Training code: a fixed list of pure-Python stdlib modules (~1.5 MB) so the file stays small.
CODE_TRAIN_DIRS = ["json", "email", "importlib", "logging", "asyncio", "unittest", "xml/dom", "http", "urllib", "concurrent/futures", "wsgiref", "collections"]
CODE_TRAIN_FILES = ["argparse.py", "calendar.py", "csv.py", "dataclasses.py", "datetime.py", "difflib.py", "enum.py", "functools.py", "gettext.py", "inspect.py", "ipaddress.py", "locale.py", "optparse.py", "pathlib.py", "pprint.py", "random.py", "shutil.py", "statistics.py", "string.py", "tarfile.py", "tempfile.py", "typing.py", "zipfile.py", "configparser.py", "contextlib.py", "copy.py", "decimal.py", "_pydecimal.py", "queue.py", "sched.py", "selectors.py", "smtplib.py", "socketserver.py", "threading.py", "tokenize.py", "traceback.py", "uuid.py", "weakref.py"]


def unpack(packages, into):
    subprocess.run(["apt-get", "download", *packages], cwd=into, check=True, capture_output=True)
    for deb in pathlib.Path(into).glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(pathlib.Path(into) / "x")], check=True)
    return pathlib.Path(into) / "x"


def lazy_rdata(base):
    """Objects of an R lazy-load database (`Rdata.rdx` index + `Rdata.rdb` blobs)."""
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(open(f"{base}.rdx", "rb").read())))
    blob = open(f"{base}.rdb", "rb").read()
    out = {}
    for name, (off, length) in index["variables"].items():
        off, length = int(off), int(length)
        out[name] = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(blob[off + 4 : off + length])))
    return out


def paragraphs(lines):
    """Join wrapped lines into paragraphs (blank-line separated), whitespace normalised."""
    paras, cur = [], []
    for line in lines:
        line = line.strip()
        if not line:
            if cur:
                paras.append(" ".join(cur))
                cur = []
        else:
            cur.append(line)
    if cur:
        paras.append(" ".join(cur))
    # Drop chapter headings and other short lines: they are not sentences.
    return [re.sub(r"\s+", " ", p.replace("_", "")) for p in paras if len(p) >= 40]


def english(tmp):
    root = unpack(["r-cran-janeaustenr", "r-cran-tidytext", "r-cran-tokenizers"], tmp) / "usr/lib/R/site-library"
    books = {}
    for name, text in lazy_rdata(root / "janeaustenr/data/Rdata").items():
        if name != "austen_books" and hasattr(text, "__len__") and len(text) > 1000:
            books[name] = list(text)
    moby = str(lazy_rdata(root / "tokenizers/data/Rdata")["mobydick"][0])
    start = moby.index("CHAPTER 1. Loomings.")
    end = moby.index("End of Project Gutenberg")
    books["mobydick"] = moby[start:end].replace("\r\n", "\n").split("\n")
    frame = rdata.read_rda(str(root / "tidytext/extdata/books.rda"))["books"]
    for title, group in frame.groupby("title"):
        if title == "Pride and Prejudice":  # already in janeaustenr
            continue
        books[re.sub(r"\W+", "_", title.lower()).strip("_")] = [str(t) for t in group["text"]]
    train, heldout = [], []
    for name in sorted(books):
        paras = paragraphs(books[name])
        cut = int(len(paras) * (1 - HELDOUT_FRACTION))
        train += paras[:cut]
        heldout += paras[cut:]
        print(f"english: {name}: {len(paras)} paragraphs")
    return train, heldout


def code(tmp):
    root = unpack(["libpython3.11-stdlib", "libpython3.11-minimal"], tmp) / "usr/lib/python3.11"
    def read(path):
        return f"# file: {path.relative_to(root)}\n" + path.read_text(encoding="utf-8").strip() + "\n"
    train = []
    for d in CODE_TRAIN_DIRS:
        for p in sorted((root / d).rglob("*.py")):
            train.append(read(p))
    train += [read(root / f) for f in CODE_TRAIN_FILES]
    heldout = [read(root / f) for f in CODE_HELDOUT]
    return train, heldout, (root.parent.parent / "share/doc/libpython3.11-minimal/copyright")


def write(dirname, train, heldout, sep):
    d = OUT / dirname
    d.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same input gives byte-identical files.
    with open(d / "train.txt.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(sep.join(train).encode())
    (d / "heldout.txt").write_text(sep.join(heldout))
    print(f"{dirname}: train {sum(map(len, train)) / 1e6:.2f} MB, heldout {sum(map(len, heldout)) / 1e6:.2f} MB")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        train, heldout = english(tmp)
        write("english", train, heldout, "\n\n")
    with tempfile.TemporaryDirectory() as tmp:
        train, heldout, _ = code(tmp)
        write("code", train, heldout, "\n")


if __name__ == "__main__":
    main()
