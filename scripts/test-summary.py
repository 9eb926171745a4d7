#!/usr/bin/env python3
"""Counts test cases for scripts/test.sh.

Each test binary writes a TAP report to <build>/tests/tap/<test name>.tap
(criterion's --tap, or the shell tests' own). A test that meson ran but that
left no report counts as one case with meson's verdict; a binary that failed
in meson while its report shows no failure (it crashed after reporting, or
leaked under ASan) adds one failure. Skips are listed with their reasons, and
the last line is the plain summary.
"""
import json
import os
import re
import sys

build = sys.argv[1]
log = os.path.join(build, "meson-logs", "testlog.json")
tap_dir = os.path.join(build, "tests", "tap")

passed = failed = skipped = 0
skips = []
failures = []

entries = []
if os.path.exists(log):
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line:
                entries.append(json.loads(line))

for e in entries:
    # meson names tests "project:suite / name"; the TAP file carries the bare name.
    name = e["name"].split(" / ")[-1]
    result = e["result"]
    tap = os.path.join(tap_dir, name + ".tap")
    t_pass = t_fail = t_skip = 0
    if os.path.exists(tap):
        with open(tap, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip().rstrip("\0").rstrip()
                m = re.match(r"^(not ok|ok)\b\s*\d*\s*-?\s*(.*)$", line)
                if not m:
                    continue
                status, rest = m.group(1), m.group(2)
                sk = re.search(r"#\s*SKIP\b\s*(.*)$", rest, re.I)
                case = re.sub(r"\s*#.*$", "", rest).strip()
                if sk:
                    t_skip += 1
                    skips.append((f"{name}: {case}", sk.group(1).strip() or "no reason given"))
                elif status == "ok":
                    t_pass += 1
                else:
                    t_fail += 1
                    failures.append(f"{name}: {case}")
    if t_pass + t_fail + t_skip == 0:
        if result == "OK":
            t_pass = 1
        elif result == "SKIP":
            t_skip = 1
            skips.append((name, "skipped by the test (see its log)"))
        else:
            t_fail = 1
            failures.append(f"{name}: {result}")
    elif result not in ("OK", "SKIP") and t_fail == 0:
        t_fail += 1
        failures.append(f"{name}: binary ended with {result} after its cases passed")
    passed += t_pass
    failed += t_fail
    skipped += t_skip

if not entries:
    failed += 1
    failures.append("no tests ran (meson testlog missing)")

for f in failures:
    print(f"FAILED: {f}")
for n, why in skips:
    print(f"SKIPPED: {n}: {why}")
summary = f"{passed} passed, {failed} failed"
if skipped:
    summary += f", {skipped} skipped"
print(summary)
sys.exit(1 if failed else 0)
