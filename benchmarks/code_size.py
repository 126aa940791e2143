"""The size of ``src/coderl`` at two revisions, per module: lines and code tokens.

Lines change with formatting (re-wrapping to the 120-column limit shortens a file without
changing its code); code tokens — Python tokens other than strings, comments and layout — do not.
Both are reported.

    python benchmarks/code_size.py 8568492^ HEAD            # every module
    python benchmarks/code_size.py 8568492^ HEAD --exclude critic_sampling online_ expert_ \\
        advantages shared_prefix /distributed/ /serve/ src/coderl/rewards.py
        # issue 15's scope: the modules that existed before the stage contract
"""

from __future__ import annotations

import argparse
import collections
import io
import subprocess
import tokenize

LAYOUT = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
          tokenize.ENDMARKER, tokenize.STRING}


def size(rev: str, exclude: list[str], by_file: tuple[str, ...]) -> tuple[collections.Counter, collections.Counter]:
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "src/coderl"], capture_output=True,
                           text=True, check=True).stdout.split()
    tokens, lines = collections.Counter(), collections.Counter()
    for name in names:
        if not name.endswith(".py") or any(x in name for x in exclude):
            continue
        src = subprocess.run(["git", "show", f"{rev}:{name}"], capture_output=True, text=True, check=True).stdout
        rel = name[len("src/coderl/"):]
        key = rel if rel.split("/")[0] in by_file or "/" not in rel else rel.split("/")[0] + "/"
        tokens[key] += sum(1 for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type not in LAYOUT)
        lines[key] += src.count("\n")
    return tokens, lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--exclude", nargs="*", default=[], help="leave out paths containing any of these")
    ap.add_argument("--by-file", nargs="*", default=["training", "generation"],
                    help="packages listed file by file (the others as one row)")
    args = ap.parse_args(argv)
    (ta, la), (tb, lb) = (size(r, args.exclude, tuple(args.by_file)) for r in (args.old, args.new))
    print(f"| module | code tokens {args.old} | {args.new} | change | lines {args.old} | {args.new} | change |")
    print("|---|---|---|---|---|---|---|")
    for k in sorted(set(ta) | set(tb), key=lambda k: (tb[k] - ta[k], k)):
        print(f"| {k} | {ta[k]:,} | {tb[k]:,} | {tb[k] - ta[k]:+,} | {la[k]:,} | {lb[k]:,} | {lb[k] - la[k]:+,} |")
    ts, ls = sum(ta.values()), sum(la.values())
    print(f"| **all** | {ts:,} | {sum(tb.values()):,} | {sum(tb.values()) - ts:+,} | {ls:,} | {sum(lb.values()):,} "
          f"| {sum(lb.values()) - ls:+,} |")


if __name__ == "__main__":
    main()
