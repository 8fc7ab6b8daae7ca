#!/usr/bin/python3
"""Parses Prometheus text exposition with the official client's parser (Debian's
python3-prometheus-client) and prints one line per sample:

    <family name> TAB <family type> TAB <sample name> TAB <labels as sorted JSON> TAB <value>

Exits 1 with the parser's error when the text is not valid exposition format. Usage:
    prom_parse.py FILE     (or - for stdin)
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "-"
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"parse error: {e!r}", file=sys.stderr)
        return 1
    seen = set()
    for f in families:
        if f.name in seen:
            print(f"duplicate family: {f.name}", file=sys.stderr)
            return 1
        seen.add(f.name)
        for s in f.samples:
            labels = json.dumps(s.labels, sort_keys=True, separators=(",", ":"))
            print("\t".join([f.name, f.type, s.name, labels, repr(s.value)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
