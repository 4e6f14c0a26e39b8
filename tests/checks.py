"""What the Python end-to-end test scripts share: check() prints and records
each result, finish() reports the failures and sets the exit status. A script
in tests/<area>/ imports it after putting tests/ on sys.path."""
import sys

failures = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        failures.append(message)


def finish(success_line):
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(success_line)
