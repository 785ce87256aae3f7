"""`gateway keys ...`: the control plane's commands.

`gateway keys hash [KEY]` prints the SHA-256 of a key (the argument, else standard input without its
trailing newline) as the 64 hex digits `key_sha256` takes in a config file.
"""

from __future__ import annotations

import argparse
import hashlib
import sys


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="client API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    hash_ = actions.add_parser("hash", help="print the sha256 of a key, for key_sha256 in a config file")
    hash_.add_argument("key", nargs="?", help="the key (default: read from standard input)")


def run(args: argparse.Namespace) -> int:
    if args.action == "hash":
        return hash_key(args.key)
    raise AssertionError(args.action)


def hash_key(key: str | None) -> int:
    if key is None:
        key = sys.stdin.readline().rstrip("\r\n")
    if not key.strip():
        print(
            "gateway keys hash: no key given (pass it as an argument or on standard input)", file=sys.stderr
        )
        return 1
    if key != key.strip():
        print("gateway keys hash: the key starts or ends with whitespace", file=sys.stderr)
        return 1
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0


__all__ = ("add_commands", "hash_key", "run")
