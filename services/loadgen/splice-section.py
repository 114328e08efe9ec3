#!/usr/bin/env python3
"""Replaces what lies between two marker lines of a document with a generated section.

    splice-section.py DOC SECTION START_MARKER END_MARKER

The scripts that write BENCHMARKS.md (bench.sh, sharedb-bench.sh, targets.sh) share it, so each
generated section is put in the same way: the markers stay, the section between them is replaced
whole, one newline after the start marker and one before the end marker.
"""
import sys

doc, section, start, end = sys.argv[1:]
text = open(doc).read()
body = open(section).read().strip("\n")
a = text.index(start) + len(start)
b = text.index(end, a)
open(doc, "w").write(text[:a] + "\n" + body + "\n" + text[b:])
